"""The connection: one PyMongo AsyncMongoClient per process with every Beanie document
initialised, and a synchronous client for the reads that go straight into arrays."""

from __future__ import annotations

import contextvars
from typing import Any

import pymongo
from beanie import init_beanie
from pymongo import AsyncMongoClient, WriteConcern, monitoring

from core.settings import Settings
from core.store.profile import MONGODB, SECANTUSDB, use_profile
from models import DOCUMENT_MODELS

Client = AsyncMongoClient[dict[str, Any]]

# The round trips sent on behalf of the current request; the async driver runs a command's
# listeners in the task that sent it, so the request's own counter is in the context.
db_calls_var: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "db_calls", default=None
)

# Every write is acknowledged only once it is in the journal on disk (and, on a replica set,
# on a majority of members): an answer the API sends after it survives a crash of any part.
DURABLE = WriteConcern(w="majority", j=True)

# Index builds on a large collection take longer than any request's budget.
STARTUP_TIMEOUT = 600.0
# A pooled connection idle this long is closed by the client before it is used again. Servers
# and proxies cut idle connections (SecantusDB after 300 s); the async driver finds out only
# when a command fails on one, and a standalone server retries no writes, so every write
# drawn on a cut connection after a quiet spell would be a 503 (python -m bench.idle_writes).
MAX_IDLE = 120.0


class CommandCounter(monitoring.CommandListener):
    """Counts MongoDB round trips per request (PyMongo's command monitoring API)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        calls = db_calls_var.get()
        if calls is not None:
            calls[0] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def _options(settings: Settings, budget: float, appname: str) -> dict[str, Any]:
    # Credentials given apart from the URL need no URL escaping (docker-compose passes them).
    credentials: dict[str, Any] = {}
    if settings.mongodb_username is not None and settings.mongodb_password is not None:
        credentials = {
            "username": settings.mongodb_username,
            "password": settings.mongodb_password.get_secret_value(),
        }
    return {
        **credentials,
        "tz_aware": True,
        "w": DURABLE.document["w"],
        "journal": True,
        "timeoutMS": int(budget * 1000),
        "serverSelectionTimeoutMS": int(min(budget, 2.0) * 1000),
        "connectTimeoutMS": 2000,
        "maxIdleTimeMS": int(MAX_IDLE * 1000),
        "appname": appname,
    }


def blocking_client(settings: Settings, *, op_budget: float) -> pymongo.MongoClient:
    """A synchronous client, for the libraries that read into arrays (pymongoarrow) in a
    worker thread; every other query goes through the async client."""
    options = _options(settings, op_budget, "movie-ratings-arrays")
    return pymongo.MongoClient(settings.mongodb_url, **options)


async def connect(settings: Settings, *, op_budget: float | None = None) -> Client:
    """The client of this process, with every document model initialised.

    `op_budget` is the budget of each operation, retries and server selection included
    (PyMongo's timeoutMS): the API passes a few seconds so a stalled database is a fast 503;
    workers pass a longer one fitting their largest summaries.
    """
    if not settings.mongodb_url:
        raise RuntimeError("MONGODB_URL is not set (use `make run` for the embedded default)")
    budget = op_budget if op_budget is not None else settings.mongodb_timeout
    client: Client = AsyncMongoClient(
        settings.mongodb_url,
        **_options(settings, budget, "movie-ratings"),
        event_listeners=[CommandCounter()],
    )
    try:
        with pymongo.timeout(STARTUP_TIMEOUT):
            await bind(client[settings.mongodb_db])
            build = await client.admin.command("buildInfo")
    except BaseException:
        await client.close()
        raise
    use_profile(SECANTUSDB if "secantusVersion" in build else MONGODB)
    return client


async def bind(database: Any) -> None:
    """Bind every document model to `database` and build the indexes the queries read."""
    await init_beanie(database=database, document_models=DOCUMENT_MODELS)  # type: ignore[arg-type]
    from core.store.indexes import ensure_indexes  # it reads every store module

    await ensure_indexes()


async def close(client: Client) -> None:
    """Close the client and its pool."""
    await client.close()
