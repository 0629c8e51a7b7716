"""What every operation of the OpenAPI document says besides its own decorators.

An apispec plugin, run after aiohttp-apigami's: it sees each operation as generated and
adds what holds for all of them, so no handler can forget it.
"""

from __future__ import annotations

from typing import Any

from apispec import BasePlugin

from api.admission import CHARGED_PREFIX
from api.http import errors

# Written after apigami resolved schema classes to references: a reference, not the class.
UNAVAILABLE = {
    "description": "The database or another dependency is unavailable, or this server is busy: see "
    "Retry-After",
    "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}},
}


class ContractPlugin(BasePlugin):
    """Drops HEAD twins, names operations, and documents the answers of JSON bodies."""

    def operation_helper(
        self, path: str | None = None, operations: dict | None = None, **kwargs: Any
    ) -> None:
        if operations is None:
            return
        # aiohttp answers HEAD for every GET; documenting each twin (with a body a HEAD
        # never has) only clutters the document and generated clients.
        operations.pop("head", None)
        handler = kwargs.get("handler")
        for method, operation in operations.items():
            if handler is not None:
                operation.setdefault("operationId", handler.__name__)
            responses = operation.setdefault("responses", {})
            body = operation.get("requestBody")
            if body is not None and "application/json" in body.get("content", {}):
                body["required"] = True
                if method == "patch":  # a change must change something
                    media = body["content"]["application/json"]
                    media["schema"] = {"allOf": [media["schema"]], "minProperties": 1}
                for status, entry in errors(400, 408, 413, 415).items():
                    responses.setdefault(_key(responses, status), entry)
            # Any operation can meet storage trouble (a stalled database, a full disk) or a
            # full process; every API operation is charged to its client's budget.
            responses.setdefault(_key(responses, 503), UNAVAILABLE)
            if path is not None and path.startswith(CHARGED_PREFIX):
                responses.setdefault(_key(responses, 429), errors(429)[429])
            # Links ride on the handler's @docs(links={status: {...}}): apigami keeps only
            # a response's description, headers and examples, so they are placed here.
            for status, links in operation.pop("links", {}).items():
                entry = responses.setdefault(_key(responses, status), {"description": "Links"})
                entry["links"] = links


def _key(responses: dict[Any, Any], status: int) -> Any:
    """The key a status already has in `responses` (apigami writes some as text)."""
    return next((k for k in responses if str(k) == str(status)), status)
