"""Request ids, bearer authentication, body checks, and problem+json for every error."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import logging
import os
import re
import time
from typing import Any, NoReturn

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp_apigami.constants import SCHEMAS_ATTR
from marshmallow import Schema, ValidationError
from marshmallow.fields import Field
from webargs.aiohttpparser import AIOHTTPParser

from api.appkeys import DISK, METER, NEAR, SETTINGS, TOKENS
from api.http import AUTH_ATTR, NEAR_CANDIDATE, NearCandidate, etag_matches, problem
from api.schemas import ObjectIdField
from core import store
from core.errors import DomainError, Forbidden, InvalidInput, StorageFull, Unauthorized
from core.logs import request_id_var
from core.security import CLIENT_SUBJECT
from core.services import tokens as token_service
from core.store import db_calls_var

log = logging.getLogger("api.requests")
access_log = logging.getLogger("api.access")

PRINCIPAL = "principal"
VERIFIED = "verified_principal"  # a token's principal, once api.admission verified it
JSON_BODY = "json_body"  # the decoded body, kept for the webargs parser
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_BODY_METHODS = {"POST", "PUT", "PATCH", "DELETE"}  # DELETE /users/me takes a password


class RequestValidationError(Exception):
    """Raised by the webargs error callback; rendered as a 422 listing each field."""

    def __init__(self, messages: dict[str, Any]) -> None:
        super().__init__("validation failed")
        self.messages = messages


def webargs_error_callback(
    error: ValidationError, req: Any, schema: Any, *, error_status_code: Any, error_headers: Any
) -> NoReturn:
    raise RequestValidationError(error.normalized_messages())


def flatten_errors(messages: Any, location: str = "", prefix: str = "") -> list[dict[str, str]]:
    """{"json": {"score": ["bad"]}} -> [{"location": "json", "field": "score", ...}]."""
    out: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            key = str(key)
            if not location:
                out += flatten_errors(value, key, "")
            else:
                field = key if key != "_schema" else ""
                out += flatten_errors(value, location, f"{prefix}.{field}" if prefix else field)
    elif isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict | list):
                out += flatten_errors(message, location, prefix)
            else:
                out.append({"location": location, "field": prefix, "message": str(message)})
    else:
        out.append({"location": location, "field": prefix, "message": str(messages)})
    return out


def _request_id(request: web.Request) -> str:
    incoming = request.headers.get("X-Request-ID", "")
    return incoming if incoming and _REQUEST_ID.match(incoming) else os.urandom(16).hex()


def _finish(
    request: web.Request, response: web.StreamResponse, request_id: str, db_calls: int
) -> None:
    response.headers["X-Request-ID"] = request_id
    if request.app[SETTINGS].expose_db_calls:
        response.headers["X-DB-Calls"] = str(db_calls)


def _log_access(
    request: web.Request, status: int, started: float, db_calls: int, request_id: str
) -> None:
    if access_log.isEnabledFor(logging.INFO):  # the hot path skips building the record
        access_log.info(
            "request",
            extra={
                "request_id": request_id,
                "method": request.method,
                "path": request.path,
                "status": status,
                "ms": round((time.perf_counter() - started) * 1000, 2),
                "db_calls": db_calls,
            },
        )


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Accept a sane X-Request-ID or make one; echo it and keep it for logs and tasks.
    Counts the request (near-cache hits, served before, never reach the database)."""
    request.app[METER].hit()
    request_id = _request_id(request)
    token = request_id_var.set(request_id)
    calls = [0]
    calls_token = db_calls_var.set(calls)
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        _finish(request, response, request_id, calls[0])
        return response
    finally:
        _log_access(request, status, started, calls[0], request_id)
        db_calls_var.reset(calls_token)
        request_id_var.reset(token)


@web.middleware
async def problem_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every error into problem+json; log unexpected ones once with the request id."""
    try:
        return await handler(request)
    except RequestValidationError as exc:
        return problem(
            request,
            status=422,
            title="Unprocessable Content",
            detail="The request has invalid fields.",
            slug="validation-error",
            errors=flatten_errors(exc.messages),
        )
    except InvalidInput as exc:
        field_errors = flatten_errors({exc.location: exc.errors}) if exc.errors else []
        return problem(
            request,
            status=422,
            title=exc.title,
            detail=exc.detail,
            slug=exc.slug,
            errors=field_errors,
            **exc.extra,
        )
    except Unauthorized as exc:
        challenge = 'Bearer realm="movie-ratings"'
        if exc.error:
            challenge += f', error="{exc.error}"'
        return problem(
            request,
            status=401,
            title=exc.title,
            detail=exc.detail,
            slug=exc.slug,
            headers={"WWW-Authenticate": challenge},
        )
    except DomainError as exc:
        return problem(
            request,
            status=exc.status,
            title=exc.title,
            detail=exc.detail,
            slug=exc.slug,
            headers=exc.headers or None,
            **exc.extra,
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        return problem(
            request,
            status=exc.status,
            title=exc.reason,
            detail=_http_detail(exc),
            headers=headers,
        )
    except store.StoreError as exc:
        if not store.unavailable(exc):
            return _unexpected(request)
        # Stalled or unreachable: the client's budget ran out, not our code. The same write
        # may still have been stored; its intent then rides with it (see core.services).
        log.warning("database unavailable: %s", type(exc).__name__, extra={"path": request.path})
        return problem(
            request,
            status=503,
            title="Service Unavailable",
            detail="The database did not answer in time; please retry.",
            slug="database-unavailable",
            headers={"Retry-After": str(store.RETRY_AFTER)},
        )
    except Exception:
        return _unexpected(request)


_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@web.middleware
async def disk_guard_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse writes while the database's disk is under its free-space floor: a 503 the
    client retries beats a write the database may fail on, or panic over, half-way."""
    if request.method in _WRITE_METHODS and request.app[DISK].low:
        raise StorageFull(
            "The database's disk is nearly full; writes are refused until it has room.",
            headers={"Retry-After": str(store.RETRY_AFTER)},
        )
    return await handler(request)


def _unexpected(request: web.Request) -> web.Response:
    """Log an unexpected error once (with the request id, from the log context); answer 500."""
    log.exception("unhandled error", extra={"method": request.method, "path": request.path})
    return problem(
        request,
        status=500,
        title="Internal Server Error",
        detail="Something went wrong on our side; the request id identifies it in our logs.",
    )


def _http_detail(exc: web.HTTPException) -> str:
    if exc.status == 404:
        return "No resource at this URL."
    if exc.status == 405:
        return "This URL does not accept that method."
    if exc.status == 413:
        return "The request body is larger than 1 MiB."
    return exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason


def _handler_attr(request: web.Request, name: str) -> Any:
    return getattr(request.match_info.handler, name, None)


@web.middleware
async def near_cache_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Serve a hot public GET from this process's copy, before anything else runs.

    Outermost, so a hit costs no other middleware: it does the request id's work itself.
    Responses are kept under their canonical URL only: another spelling of the same request
    misses here and is answered from Redis, so spellings cannot multiply entries.
    """
    near = request.app[NEAR]
    if near is None or request.method != "GET":
        return await handler(request)
    url = request.path_qs
    entry = near.get(url)
    if entry is not None:
        started = time.perf_counter()
        headers = {"ETag": entry.etag, "Cache-Control": entry.cache_control}
        if etag_matches(request.headers.get("If-None-Match"), entry.etag):
            hit = web.Response(status=304, headers=headers)
        else:
            hit = web.Response(body=entry.body, content_type="application/json", headers=headers)
        request_id = _request_id(request)
        _finish(request, hit, request_id, 0)
        _log_access(request, hit.status, started, 0, request_id)
        return hit
    response = await handler(request)
    candidate: NearCandidate | None = request.get(NEAR_CANDIDATE)
    if candidate is not None and response.status in (200, 304):
        near.put(
            candidate.url,
            version=candidate.version,
            stamp=candidate.stamp,
            body=candidate.body,
            etag=candidate.etag,
            cache_control=response.headers["Cache-Control"],
        )
    return response


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Verify the bearer token and scope that the matched handler declares."""
    required = _handler_attr(request, AUTH_ATTR)
    if required is None:
        return await handler(request)
    principal = request.get(VERIFIED)  # admission already checked the token
    if principal is None:
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("A bearer token is required.", error=None)
        principal = request.app[TOKENS].verify(token.strip())
    scope = required["scope"]
    if scope and scope not in principal.scopes:
        raise Forbidden(
            f"This needs the '{scope}' scope.",
            required_scope=scope,
            # RFC 6750 §3.1: tells the client which scope to ask for.
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
    if required["person"] and principal.is_client:
        raise Forbidden("This route acts for a person; a client's token cannot use it.")
    if principal.is_client:  # operators' traffic: one read, so a revocation acts at once
        await token_service.check_client(client_id=principal.subject.removeprefix(CLIENT_SUBJECT))
    request[PRINCIPAL] = principal
    return await handler(request)


@web.middleware
async def json_body_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse non-JSON (415) and malformed JSON (400) before schema validation sees it."""
    schemas = _handler_attr(request, SCHEMAS_ATTR) or []
    if request.method in _BODY_METHODS and any(s.location == "json" for s in schemas):
        if request.content_type != "application/json":
            raise web.HTTPUnsupportedMediaType(text="The body must be application/json.")
        try:
            async with asyncio.timeout(request.app[SETTINGS].http_body_timeout):
                raw = await request.read()  # raises 413 past client_max_size
        except TimeoutError:
            # aiohttp then reads what is left of it for at most its lingering time, and closes.
            raise web.HTTPRequestTimeout(text="The body did not arrive in time.") from None
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise web.HTTPBadRequest(text="The body is not valid JSON.") from None
        if not isinstance(body, dict):
            raise RequestValidationError({"json": {"_schema": ["Expected a JSON object."]}})
        if _depth(body) > MAX_JSON_DEPTH:
            raise web.HTTPBadRequest(text=f"The body nests deeper than {MAX_JSON_DEPTH} levels.")
        request[JSON_BODY] = body
    return await handler(request)


MAX_JSON_DEPTH = 32  # no body this API takes nests beyond 3; orjson alone allows 1,024


def _depth(value: Any) -> int:
    """How deeply containers nest in a decoded body (iterative: no recursion to exhaust)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            deepest = max(deepest, level)
            if level > MAX_JSON_DEPTH:
                break
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level + 1) for child in children)
    return deepest


class DecodedBodyParser(AIOHTTPParser):
    """webargs' aiohttp parser, taking the body `json_body_middleware` already decoded, and
    reading path ids with their fields alone."""

    def load_querystring(self, req: web.Request, schema: Schema) -> Any:
        """The query, refused with a 422 naming any parameter given more than once: which
        one counts would be a guess, and caches and links must agree on one."""
        repeated = sorted({name for name in req.query if len(req.query.getall(name)) > 1})
        if repeated:
            message = ["Given more than once; give it once."]
            raise RequestValidationError({"querystring": {name: message for name in repeated}})
        return super().load_querystring(req, schema)

    async def load_json(self, req: web.Request, schema: Schema) -> Any:
        if JSON_BODY in req:
            return req[JSON_BODY]
        return await super().load_json(req, schema)

    async def parse(  # type: ignore[override]
        self, argmap: Any, req: web.Request, *, location: str | None = None, **kwargs: Any
    ) -> Any:
        ids = (
            _id_fields(argmap) if location == "match_info" and isinstance(argmap, Schema) else None
        )
        if ids is None or req.match_info.keys() != ids.keys():
            return await super().parse(argmap, req, location=location, **kwargs)
        # A whole schema load costs about a sixth of a cold by-id read's CPU (py-spy); each
        # field's own deserialize is the same check with the same message.
        parsed, errors = {}, {}
        for name, field in ids.items():
            try:
                parsed[name] = field.deserialize(req.match_info[name])
            except ValidationError as exc:
                errors[name] = exc.messages
        if errors:
            raise RequestValidationError({"match_info": errors})
        return parsed


@functools.cache
def _id_fields(schema: Schema) -> dict[str, Field] | None:
    """A path schema's fields by name when it holds only id fields and no hooks."""
    if schema._hooks or not schema.fields:  # pre/post-load hooks need the whole load
        return None
    if not all(type(f) is ObjectIdField and f.data_key is None for f in schema.fields.values()):
        return None
    return dict(schema.fields)


# The Swagger page takes passwords and client secrets: nothing but this origin may script
# it, frame it, or learn its URL. Its one inline script is allowed by its hash; Swagger UI
# sets inline styles and data: icons itself.
_CSP = (
    "default-src 'self'; script-src 'self'{hashes}; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.S)
SERVER_NAME = "movie-ratings"  # in place of aiohttp's banner, which names its version


@functools.lru_cache(maxsize=16)
def _content_security_policy(page: bytes) -> str:
    hashes = "".join(
        f" 'sha256-{base64.b64encode(hashlib.sha256(script).digest()).decode()}'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return _CSP.format(hashes=hashes)


async def secure_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every response (routes, static files, errors): no version banner, no sniffing,
    no referrer; HTML pages also get a Content-Security-Policy that forbids framing."""
    headers = response.headers
    headers["Server"] = SERVER_NAME
    headers["X-Content-Type-Options"] = "nosniff"
    headers["Referrer-Policy"] = "no-referrer"
    if response.content_type == "text/html":
        body = response.body if isinstance(response, web.Response) else None
        page = body if isinstance(body, bytes) else b""
        headers["Content-Security-Policy"] = _content_security_policy(page)
        headers["X-Frame-Options"] = "DENY"
