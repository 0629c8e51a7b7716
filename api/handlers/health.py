"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from aiohttp_apigami import response_schema

from api.appkeys import MONGO, REDIS
from api.http import docs, errors, json_response, problem
from api.schemas import HealthSchema, ReadySchema

_PROBE_TIMEOUT = 2.0


@docs(tags=["health"], summary="The process is alive")
@response_schema(HealthSchema, 200)
async def health(request: web.Request) -> web.Response:
    """Liveness: answers while the process runs (and says which one, with WEB_CONCURRENCY)."""
    return json_response({"status": "ok", "pid": os.getpid()})


async def _check(coro) -> str:
    try:
        await asyncio.wait_for(coro, _PROBE_TIMEOUT)
        return "ok"
    except Exception as exc:  # any failure means not ready; the reason is reported
        return f"unavailable: {type(exc).__name__}"


@docs(
    tags=["health"],
    summary="MongoDB and Redis answer",
    responses={
        200: {
            "description": "Both answer",
            "content": {"application/json": {"schema": ReadySchema}},
        },
        **errors(503),
    },
)
async def ready(request: web.Request) -> web.Response:
    """Readiness: MongoDB and Redis both answer a ping."""
    checks = {
        "mongodb": await _check(request.app[MONGO].admin.command("ping")),
        "redis": await _check(request.app[REDIS].ping()),
    }
    if all(v == "ok" for v in checks.values()):
        return json_response({"status": "ok", "checks": checks})
    return problem(
        request,
        status=503,
        title="Service Unavailable",
        detail="A dependency did not answer.",
        slug="not-ready",
        checks=checks,
    )
