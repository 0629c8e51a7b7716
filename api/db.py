"""MongoDB connection and Beanie initialisation, shared by the API and the workers."""

from __future__ import annotations

import contextvars

from beanie import init_beanie
from motor.motor_asyncio import AsyncIOMotorClient
from pymongo import monitoring

from api.settings import Settings
from models import DOCUMENT_MODELS

# The commands sent on behalf of the current request (motor copies the context into the
# thread that talks to the server, so the listener sees the request's counter).
db_calls_var: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "db_calls", default=None
)


class CommandCounter(monitoring.CommandListener):
    """Counts MongoDB round trips per request (pymongo's command monitoring API)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        calls = db_calls_var.get()
        if calls is not None:
            calls[0] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def connect(settings: Settings) -> AsyncIOMotorClient:
    """A motor client bound to the running loop, with every document model initialised."""
    if not settings.mongodb_url:
        raise RuntimeError("MONGODB_URL is not set (use `make run` for the embedded default)")
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        settings.mongodb_url,
        tz_aware=True,
        serverSelectionTimeoutMS=5000,
        appname="movie-ratings",
        event_listeners=[CommandCounter()],
    )
    await init_beanie(
        database=client[settings.mongodb_db],
        document_models=DOCUMENT_MODELS,  # type: ignore[arg-type]
    )
    return client
