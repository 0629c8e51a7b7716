"""MongoDB connection and Beanie initialisation, shared by the API and the workers."""

from __future__ import annotations

from beanie import init_beanie
from motor.motor_asyncio import AsyncIOMotorClient

from api.settings import Settings
from models import DOCUMENT_MODELS


async def connect(settings: Settings) -> AsyncIOMotorClient:
    """A motor client bound to the running loop, with every document model initialised."""
    if not settings.mongodb_url:
        raise RuntimeError("MONGODB_URL is not set (use `make run` for the embedded default)")
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        settings.mongodb_url, tz_aware=True, serverSelectionTimeoutMS=5000, appname="movie-ratings"
    )
    await init_beanie(
        database=client[settings.mongodb_db],
        document_models=DOCUMENT_MODELS,  # type: ignore[arg-type]
    )
    return client
