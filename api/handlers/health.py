"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
import os

from aiohttp import web
from aiohttp_apigami import response_schema

from api.appkeys import DISK, MONGO, REDIS, SETTINGS
from api.http import docs, errors, json_response, problem
from api.schemas import HealthSchema, ReadySchema
from core.store.health import heartbeat_write

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
    summary="MongoDB takes a write and Redis answers",
    responses={
        200: {
            "description": "Both work; `disk` gives the database disk's free space",
            "content": {"application/json": {"schema": ReadySchema}},
        },
        **errors(503),
    },
)
async def ready(request: web.Request) -> web.Response:
    """Readiness: MongoDB stores a tiny durable write (a ping also answers from a server
    whose disk failed) and Redis answers a ping. The database disk's free space is reported;
    under the floor the process stays ready for reads while it refuses writes."""
    settings = request.app[SETTINGS]
    database = request.app[MONGO][settings.mongodb_db]
    checks = {
        "mongodb": await _check(heartbeat_write(database)),
        "redis": await _check(request.app[REDIS].ping()),
    }
    watch = request.app[DISK]
    space = await watch.check(database) if checks["mongodb"] == "ok" else watch.space
    disk = {"floor": watch.floor, "writes": "refused" if watch.low else "accepted"}
    if space is not None:
        disk |= {"free": space.free, "total": space.total}
    if all(v == "ok" for v in checks.values()):
        return json_response({"status": "ok", "checks": checks, "disk": disk})
    return problem(
        request,
        status=503,
        title="Service Unavailable",
        detail="A dependency did not answer.",
        slug="not-ready",
        checks=checks,
        disk=disk,
    )
