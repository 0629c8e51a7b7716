"""Recommendations: workers train and publish versioned models; readers suggest from the
newest one (similar movies; a person's list, folded in from their ratings at each read)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import DESCENDING
from pymongo.errors import DuplicateKeyError

from core import recommend
from core.cache import Cache
from core.errors import NotFound
from core.services import chunked
from core.services.movies import canonical_genre
from core.services.ratings import MOVIE_CARD
from models import Movie, Rating, RecommenderChunk, RecommenderModel, User

CHUNK_BYTES = 4 << 20  # factor slices stay well under MongoDB's 16 MiB document limit
KEPT_VERSIONS = 2  # the newest and the one before it, which a reader may still be loading
MIN_LIKES = 3  # fewer liked movies than this: the person gets the top-rated list instead
CHECK_EVERY = 10.0  # seconds between a reader's looks for a newer model
COLLABORATIVE, TOP_RATED = "collaborative", "top-rated"
TOP_RATED_CARD = {**MOVIE_CARD, "rating.weighted": 1}


@dataclass(frozen=True)
class Likes:
    """Every like as (user index, item index), and the movie of each item index."""

    users: recommend.Ints
    items: recommend.Ints
    movie_ids: list[ObjectId]
    n_users: int


def read_likes(ratings: Any) -> Likes:
    """The likes of a (synchronous) ratings collection, read by pymongoarrow straight into
    arrays, then coded as indexes by Arrow: no Python object per rating, so it scales."""
    import pyarrow.compute as pc
    from pymongoarrow.api import Schema, find_arrow_all
    from pymongoarrow.types import ObjectIdType

    schema = Schema({"user_id": ObjectIdType(), "movie_id": ObjectIdType()})
    table = find_arrow_all(
        ratings,
        {"score": {"$gte": recommend.LIKED}},
        schema=schema,
        projection={"_id": 0, "user_id": 1, "movie_id": 1},
    )
    users = pc.dictionary_encode(table.column("user_id").combine_chunks().storage)
    items = pc.dictionary_encode(table.column("movie_id").combine_chunks().storage)
    return Likes(
        users=users.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        items=items.indices.to_numpy(zero_copy_only=False).astype(np.int64),
        movie_ids=[ObjectId(raw) for raw in items.dictionary.to_pylist()],
        n_users=len(users.dictionary),
    )


async def train(*, ratings: Any) -> RecommenderModel | None:
    """Read the likes, learn item factors and publish them as the next version; None when
    nobody likes anything yet. CPU work runs in a thread: the worker's loop stays free."""
    started = time.monotonic()
    likes = await asyncio.to_thread(read_likes, ratings)
    if not len(likes.users):
        return None
    factors = await asyncio.to_thread(
        recommend.fit,
        likes.users,
        likes.items,
        n_users=likes.n_users,
        n_items=len(likes.movie_ids),
    )
    return await _publish(likes, factors, seconds=time.monotonic() - started)


async def _publish(likes: Likes, factors: recommend.Factors, *, seconds: float) -> RecommenderModel:
    """Store the chunks, then the model marked ready; drop versions older than the kept."""
    newest = await RecommenderModel.get_motor_collection().find_one(
        {}, {"version": 1}, sort=[("version", DESCENDING)]
    )
    version = (newest["version"] if newest else 0) + 1
    data = factors.items.tobytes()
    while True:
        model = RecommenderModel(
            version=version,
            items=likes.movie_ids,
            factors=factors.items.shape[1],
            likes=len(likes.users),
            users=likes.n_users,
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
    await RecommenderModel.get_motor_collection().update_one(
        {"_id": model.id}, {"$set": {"ready": True}}
    )
    model.ready = True
    stale = {"version": {"$lte": version - KEPT_VERSIONS}}
    await RecommenderChunk.get_motor_collection().delete_many(stale)
    await RecommenderModel.get_motor_collection().delete_many(stale)
    return model


async def has_model() -> bool:
    """Whether any model was published."""
    found = await RecommenderModel.get_motor_collection().find_one({"ready": True}, {"_id": 1})
    return found is not None


@dataclass(frozen=True)
class LoadedModel:
    version: int
    trained_at: datetime
    movie_ids: list[ObjectId]
    index: dict[ObjectId, int]
    factors: recommend.Factors
    unit: recommend.Floats  # rows of length 1, for cosines


@dataclass
class ModelStore:
    """This process's copy of the newest ready model, looked for every CHECK_EVERY seconds
    (one small query), loaded again only when its version changed."""

    check_every: float = CHECK_EVERY
    model: LoadedModel | None = None
    _checked: float = field(default=-1e18)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def current(self) -> LoadedModel | None:
        if time.monotonic() - self._checked < self.check_every:
            return self.model
        async with self._lock:
            if time.monotonic() - self._checked >= self.check_every:
                self.model = await _load_newer(self.model)
                self._checked = time.monotonic()
        return self.model


async def _load_newer(have: LoadedModel | None) -> LoadedModel | None:
    models = RecommenderModel.get_motor_collection()
    newest = await models.find_one({"ready": True}, {"version": 1}, sort=[("version", DESCENDING)])
    if newest is None or (have is not None and have.version == newest["version"]):
        return have if newest is not None else None
    doc = await models.find_one({"_id": newest["_id"]})
    if doc is None:  # deleted since: two newer versions were published meanwhile
        return have
    cursor = RecommenderChunk.get_motor_collection().find(
        {"version": doc["version"]}, {"data": 1}, sort=[("n", 1)]
    )
    data = b"".join([chunk["data"] async for chunk in cursor])
    items = np.frombuffer(data, dtype=np.float32).reshape(len(doc["items"]), doc["factors"])
    factors = recommend.Factors.of(items)
    return LoadedModel(
        version=doc["version"],
        trained_at=doc["trained_at"],
        movie_ids=doc["items"],
        index={movie_id: i for i, movie_id in enumerate(doc["items"])},
        factors=factors,
        unit=recommend.unit_rows(factors.items),
    )


@dataclass(frozen=True)
class Suggestion:
    movie: dict[str, Any]  # a movie card
    score: float
    reason: str | None = None


@dataclass(frozen=True)
class Suggestions:
    items: list[Suggestion]
    strategy: str
    model: LoadedModel | None


async def _cards(ids: list[Any], flt: dict[str, Any] | None = None) -> dict[Any, dict]:
    """Movie cards by id (those still in the catalogue and matching `flt`)."""
    cards: dict[Any, dict] = {}
    for part in chunked(ids):
        cursor = Movie.get_motor_collection().find(
            {**(flt or {}), "_id": {"$in": part}}, MOVIE_CARD
        )
        async for doc in cursor:
            cards[doc["_id"]] = doc
    return cards


async def similar_movies(
    *, movie_id: PydanticObjectId, limit: int, store: ModelStore
) -> Suggestions:
    """The movies closest to this one in the newest model (cosine of item factors); none
    while no model knows it. NotFound for a movie that does not exist."""
    if await Movie.get_motor_collection().find_one({"_id": movie_id}, {"_id": 1}) is None:
        raise NotFound("No movie with that id.")
    model = await store.current()
    if model is None or movie_id not in model.index:
        return Suggestions(items=[], strategy=COLLABORATIVE, model=model)
    rows, cosines = recommend.similar(model.unit, model.index[movie_id], limit)
    ids = [model.movie_ids[row] for row in rows]
    cards = await _cards(ids)
    items = [
        Suggestion(movie=cards[i], score=round(float(c), 4))
        for i, c in zip(ids, cosines, strict=True)
        if i in cards
    ]
    return Suggestions(items=items, strategy=COLLABORATIVE, model=model)


def _filter(genre: str | None, year_min: int | None, year_max: int | None) -> dict[str, Any]:
    flt: dict[str, Any] = {}
    if genre:
        flt["genres"] = genre
    years = {op: v for op, v in (("$gte", year_min), ("$lte", year_max)) if v is not None}
    if years:
        flt["year"] = years
    return flt


async def for_user(
    *,
    user_id: PydanticObjectId,
    limit: int,
    store: ModelStore,
    cache: Cache,
    genre: str | None = None,
    year_min: int | None = None,
    year_max: int | None = None,
) -> Suggestions:
    """Movies this person has not rated, best first: from the newest model, their taste
    folded in from the ratings they have now (a new rating shows at once), each with the
    liked movie that led to it; with fewer than MIN_LIKES likes it knows, the top-rated
    movies by weighted score."""
    if await User.get_motor_collection().find_one({"_id": user_id}, {"_id": 1}) is None:
        raise NotFound("No user with that id.")
    if genre:
        genre = await canonical_genre(genre, cache=cache)
        if genre is None:
            return Suggestions(items=[], strategy=TOP_RATED, model=None)
    flt = _filter(genre, year_min, year_max)
    rated = {
        doc["movie_id"]: doc["score"]
        async for doc in Rating.get_motor_collection().find(
            {"user_id": user_id}, {"movie_id": 1, "score": 1, "_id": 0}
        )
    }
    model = await store.current()
    liked = (
        [model.index[m] for m, s in rated.items() if s >= recommend.LIKED and m in model.index]
        if model
        else []
    )
    if model is None or len(liked) < MIN_LIKES:
        return await _top_rated(rated, flt=flt, limit=limit, model=model)
    known = np.array([model.index[m] for m in rated if m in model.index], dtype=np.int64)
    taste = recommend.fold_in(model.factors, np.array(liked, dtype=np.int64))
    scores = model.factors.items @ taste
    items: list[Suggestion] = []
    reasons: dict[int, int] = {}
    ranked = recommend.top(scores, len(scores), exclude=known)
    for part in chunked(ranked[: max(limit * 20, 200)].tolist(), size=max(limit * 2, 20)):
        cards = await _cards([model.movie_ids[row] for row in part], flt)
        for row in part:
            card = cards.get(model.movie_ids[row])
            if card is None:
                continue
            reasons[row] = recommend.because(model.unit, row, np.array(liked))
            items.append(Suggestion(movie=card, score=round(float(scores[row]), 4)))
            if len(items) == limit:
                break
        if len(items) == limit:
            break
    named = await _cards([model.movie_ids[r] for r in set(reasons.values())])
    for n, because in enumerate(reasons.values()):
        source = named.get(model.movie_ids[because])
        if source is not None:
            score = rated[model.movie_ids[because]]
            reason = f"because you rated {source['title']} {score:g}"
            items[n] = Suggestion(movie=items[n].movie, score=items[n].score, reason=reason)
    return Suggestions(items=items, strategy=COLLABORATIVE, model=model)


async def _top_rated(
    rated: dict[Any, float], *, flt: dict[str, Any], limit: int, model: LoadedModel | None
) -> Suggestions:
    """The catalogue by weighted score, without what the person rated."""
    cursor = (
        Movie.get_motor_collection()
        .find({**flt, "rating.weighted": {"$gte": float("-inf")}}, TOP_RATED_CARD)
        .sort([("rating.weighted", DESCENDING), ("_id", 1)])
        .limit(limit + min(len(rated), 1_000))
    )
    items = []
    async for doc in cursor:
        if doc["_id"] in rated:
            continue
        items.append(Suggestion(movie=doc, score=round(doc["rating"]["weighted"], 4)))
        if len(items) == limit:
            break
    return Suggestions(items=items, strategy=TOP_RATED, model=model)
