"""Trained models: the likes read into arrays for training, each published version's arrays
stored in chunks under the document size limit, and what tells a training is due."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from core.recommend import LIKED
from core.settings import Settings
from core.store.client import blocking_client
from core.store.ratings import CHANGED_AT
from models import Rating, RecommenderChunk, RecommenderModel

# pymongoarrow's Cython modules were compiled against pyarrow headers whose structs are
# smaller than the installed pyarrow's (a compatible release: fields were only appended);
# Cython warns once per type at import, dozens of lines of noise at every worker start.
warnings.filterwarnings(
    "ignore", message=r"pyarrow\.lib\.\w+ size changed", category=RuntimeWarning
)

CHUNK_BYTES = 4 << 20  # slices stay well under MongoDB's 16 MiB document limit
KEPT_VERSIONS = 2  # the newest and the one before it, which a reader may still be loading
# The layout of the stored arrays; readers ignore models stored in another (older) one, and
# a worker's start trains one in this layout when there is none.
FORMAT = 2
STATE = "recommender_state"  # one document: when an import last changed ratings

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
    """Every like as (user index, item index, unix time), and the movie of each item index."""

    users: np.ndarray
    items: np.ndarray
    times: np.ndarray
    movie_ids: list[ObjectId]
    n_users: int


@dataclass(frozen=True)
class StoredModel:
    """A ready model as stored: its movies in row order, its parameters and its arrays."""

    version: int
    trained_at: datetime
    movie_ids: list[PydanticObjectId]
    params: dict[str, float]
    data: bytes  # what core.recommend.dump wrote


def read_likes(settings: Settings, *, liked: float, op_budget: float) -> Likes:
    """Every rating of at least `liked`, read by pymongoarrow straight into arrays (a
    synchronous client: call it in a thread), then coded as indexes by Arrow: no Python
    object per rating, so it scales."""
    import pyarrow as pa
    import pyarrow.compute as pc
    from pymongoarrow.api import Schema, find_arrow_all
    from pymongoarrow.types import ObjectIdType

    client = blocking_client(settings, op_budget=op_budget)
    try:
        table = find_arrow_all(
            client[settings.mongodb_db].ratings,
            {"score": {"$gte": liked}},
            schema=Schema(
                {
                    "user_id": ObjectIdType(),
                    "movie_id": ObjectIdType(),
                    "updated_at": pa.timestamp("ms"),
                }
            ),
            projection={"_id": 0, "user_id": 1, "movie_id": 1, "updated_at": 1},
        )
    finally:
        client.close()
    users = pc.dictionary_encode(table.column("user_id").combine_chunks().storage)
    items = pc.dictionary_encode(table.column("movie_id").combine_chunks().storage)
    return Likes(
        users=users.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        items=items.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        times=table.column("updated_at").cast(pa.int64()).to_numpy(zero_copy_only=False) / 1000,
        movie_ids=[ObjectId(raw) for raw in items.dictionary.to_pylist()],
        n_users=len(users.dictionary),
    )


async def publish(
    *,
    movie_ids: list[Any],
    data: bytes,
    params: dict[str, float],
    likes: int,
    users: int,
    seconds: float,
    data_mark: datetime,
) -> RecommenderModel:
    """Store a model as the next version: claim the number, store the chunks, then mark it
    ready (a reader never sees a half-stored model); drop versions older than the kept.
    `data_mark` is the database's clock just before the likes were read."""
    newest = await RecommenderModel.get_pymongo_collection().find_one(
        {}, {"version": 1}, sort=[("version", DESCENDING)]
    )
    version = (newest["version"] if newest else 0) + 1
    while True:
        model = RecommenderModel(
            version=version,
            format=FORMAT,
            items=movie_ids,
            params=params,
            likes=likes,
            users=users,
            seconds=round(seconds, 3),
            data_mark=data_mark,
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


READY = {"ready": True, "format": FORMAT}


async def has_model() -> bool:
    """Whether any model in this layout was published."""
    found = await RecommenderModel.get_pymongo_collection().find_one(READY, {"_id": 1})
    return found is not None


async def newest_version() -> int | None:
    """The version of the newest ready model (one small indexed read)."""
    newest = await RecommenderModel.get_pymongo_collection().find_one(
        READY, {"version": 1}, sort=[("version", DESCENDING)]
    )
    return None if newest is None else int(newest["version"])


async def load(version: int) -> StoredModel | None:
    """One ready version with its arrays; None when it was dropped meanwhile."""
    doc = await RecommenderModel.get_pymongo_collection().find_one({"version": version, **READY})
    if doc is None:
        return None
    cursor = RecommenderChunk.get_pymongo_collection().find(
        {"version": version}, {"data": 1}, sort=[("n", 1)]
    )
    data = b"".join([chunk["data"] async for chunk in cursor])
    return StoredModel(
        version=version,
        trained_at=doc["trained_at"],
        movie_ids=doc["items"],
        params=doc["params"],
        data=data,
    )


def _state() -> Any:
    return RecommenderModel.get_pymongo_collection().database[STATE]


async def ratings_imported() -> None:
    """Record (in the database's clock) that an import changed ratings: a model is due."""
    await _state().update_one(
        {"_id": "ratings"}, {"$currentDate": {"imported_at": True}}, upsert=True
    )


async def newest_data_mark() -> datetime | None:
    """When the newest ready model began reading its likes (None: no model, or one stored
    before marks were kept)."""
    newest = await RecommenderModel.get_pymongo_collection().find_one(
        READY, {"data_mark": 1}, sort=[("version", DESCENDING)]
    )
    return None if newest is None else newest.get("data_mark")


async def imported_since(mark: datetime) -> bool:
    """Whether an import changed ratings after `mark`."""
    found = await _state().find_one({"_id": "ratings"})
    return found is not None and found["imported_at"] > mark


async def likes_since(mark: datetime, *, at_most: int) -> int:
    """How many likes people gave through the API after `mark`, counting up to `at_most`.
    A range on the write stamps' one-field index (a second field in the filter makes
    SecantusDB scan the collection), the scores counted here; after ten times `at_most`
    writes it stops and answers `at_most`: that much change is enough for a new model."""
    cursor = (
        Rating.get_pymongo_collection()
        .find({CHANGED_AT: {"$gt": mark}}, {"score": 1, "_id": 0})
        .limit(at_most * 10)
    )
    likes = writes = 0
    async for doc in cursor:
        writes += 1
        likes += doc["score"] >= LIKED
        if likes >= at_most:
            break
    return at_most if writes >= at_most * 10 else likes
