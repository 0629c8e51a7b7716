"""Trained models: the likes read into arrays for training, and each published version's
factors stored in chunks under the document size limit."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from core.settings import Settings
from core.store.client import blocking_client
from models import RecommenderChunk, RecommenderModel

CHUNK_BYTES = 4 << 20  # factor slices stay well under MongoDB's 16 MiB document limit
KEPT_VERSIONS = 2  # the newest and the one before it, which a reader may still be loading

# The indexes of RecommenderModel documents (built at start: core.store.indexes).
MODEL_INDEXES: list[IndexModel] = [
    IndexModel([("version", DESCENDING)], name="newest", unique=True)
]

# The indexes of RecommenderChunk documents (built at start: core.store.indexes).
CHUNK_INDEXES: list[IndexModel] = [
    IndexModel([("version", ASCENDING), ("n", ASCENDING)], name="in_order", unique=True)
]


@dataclass(frozen=True)
class Likes:
    """Every like as (user index, item index), and the movie of each item index."""

    users: np.ndarray
    items: np.ndarray
    movie_ids: list[ObjectId]
    n_users: int


@dataclass(frozen=True)
class StoredModel:
    """A ready model as stored: its movies in factor-row order and the factor matrix."""

    version: int
    trained_at: datetime
    movie_ids: list[PydanticObjectId]
    items: np.ndarray  # float32, one row per movie


def read_likes(settings: Settings, *, liked: float, op_budget: float) -> Likes:
    """Every rating of at least `liked`, read by pymongoarrow straight into arrays (a
    synchronous client: call it in a thread), then coded as indexes by Arrow: no Python
    object per rating, so it scales."""
    import pyarrow.compute as pc
    from pymongoarrow.api import Schema, find_arrow_all
    from pymongoarrow.types import ObjectIdType

    client = blocking_client(settings, op_budget=op_budget)
    try:
        table = find_arrow_all(
            client[settings.mongodb_db].ratings,
            {"score": {"$gte": liked}},
            schema=Schema({"user_id": ObjectIdType(), "movie_id": ObjectIdType()}),
            projection={"_id": 0, "user_id": 1, "movie_id": 1},
        )
    finally:
        client.close()
    users = pc.dictionary_encode(table.column("user_id").combine_chunks().storage)
    items = pc.dictionary_encode(table.column("movie_id").combine_chunks().storage)
    return Likes(
        users=users.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        items=items.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        movie_ids=[ObjectId(raw) for raw in items.dictionary.to_pylist()],
        n_users=len(users.dictionary),
    )


async def publish(
    *, movie_ids: list[Any], items: np.ndarray, likes: int, users: int, seconds: float
) -> RecommenderModel:
    """Store a model as the next version: claim the number, store the chunks, then mark it
    ready (a reader never sees a half-stored model); drop versions older than the kept."""
    newest = await RecommenderModel.get_pymongo_collection().find_one(
        {}, {"version": 1}, sort=[("version", DESCENDING)]
    )
    version = (newest["version"] if newest else 0) + 1
    data = items.astype(np.float32).tobytes()
    while True:
        model = RecommenderModel(
            version=version,
            items=movie_ids,
            factors=items.shape[1],
            likes=likes,
            users=users,
            seconds=round(seconds, 3),
        )
        try:
            await model.insert()  # not ready yet: claims the version number
            break
        except DuplicateKeyError:  # another worker claimed it meanwhile: take the next
            version += 1
    chunks = [
        RecommenderChunk(version=version, n=n, data=data[start : start + CHUNK_BYTES])
        for n, start in enumerate(range(0, len(data), CHUNK_BYTES))
    ]
    await RecommenderChunk.insert_many(chunks)
    await RecommenderModel.get_pymongo_collection().update_one(
        {"_id": model.id}, {"$set": {"ready": True}}
    )
    model.ready = True
    stale = {"version": {"$lte": version - KEPT_VERSIONS}}
    await RecommenderChunk.get_pymongo_collection().delete_many(stale)
    await RecommenderModel.get_pymongo_collection().delete_many(stale)
    return model


async def has_model() -> bool:
    """Whether any model was published."""
    found = await RecommenderModel.get_pymongo_collection().find_one({"ready": True}, {"_id": 1})
    return found is not None


async def newest_version() -> int | None:
    """The version of the newest ready model (one small indexed read)."""
    newest = await RecommenderModel.get_pymongo_collection().find_one(
        {"ready": True}, {"version": 1}, sort=[("version", DESCENDING)]
    )
    return None if newest is None else int(newest["version"])


async def load(version: int) -> StoredModel | None:
    """One ready version with its factors; None when it was dropped meanwhile."""
    doc = await RecommenderModel.get_pymongo_collection().find_one(
        {"version": version, "ready": True}
    )
    if doc is None:
        return None
    cursor = RecommenderChunk.get_pymongo_collection().find(
        {"version": version}, {"data": 1}, sort=[("n", 1)]
    )
    data = b"".join([chunk["data"] async for chunk in cursor])
    items = np.frombuffer(data, dtype=np.float32).reshape(len(doc["items"]), doc["factors"])
    return StoredModel(
        version=version, trained_at=doc["trained_at"], movie_ids=doc["items"], items=items
    )
