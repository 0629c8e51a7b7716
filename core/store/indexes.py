"""Every index the store's queries read, built (idempotently) when a process connects."""

from __future__ import annotations

from beanie import Document
from pymongo import IndexModel

from core.store import identities, imports, movies, ratings, recommender, summaries, tokens, users
from models import (
    ApiClient,
    Identity,
    ImportJob,
    Movie,
    Rating,
    RecommenderChunk,
    RecommenderModel,
    RefreshToken,
    RetiredUsername,
    RevokedFamily,
    SummaryIntent,
    User,
)

OWNED: dict[type[Document], list[IndexModel]] = {
    Movie: movies.INDEXES,
    Rating: ratings.INDEXES,
    User: users.INDEXES,
    RetiredUsername: users.RETIRED_INDEXES,
    RefreshToken: tokens.REFRESH_INDEXES,
    RevokedFamily: tokens.REVOKED_INDEXES,
    ApiClient: tokens.CLIENT_INDEXES,
    Identity: identities.INDEXES,
    ImportJob: imports.INDEXES,
    SummaryIntent: summaries.INTENT_INDEXES,
    RecommenderModel: recommender.MODEL_INDEXES,
    RecommenderChunk: recommender.CHUNK_INDEXES,
}


async def ensure_indexes() -> None:
    """Build every index that is missing (an existing one with the same name is kept)."""
    for document, indexes in OWNED.items():
        await document.get_pymongo_collection().create_indexes(indexes)
