"""Ratings: one per user and movie; every change schedules exact re-aggregation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beanie import PydanticObjectId, SortDirection
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
from core.db import server_profile
from core.errors import NotFound, ServiceUnavailable
from core.queue import TaskQueue
from core.services import Page, aggregation, page_of
from models import Movie, Rating, User, utcnow

DESC = SortDirection.DESCENDING
NEWEST_FIRST = [("rated_at", DESC), ("_id", DESC)]
PROFILE_SORTS: dict[str, list[tuple[str, SortDirection]]] = {
    "recent": NEWEST_FIRST,
    "score": [("score", DESC), ("_id", DESC)],
}
MOVIE_CARD = {"title": 1, "year": 1, "rating.count": 1, "rating.mean": 1}


@dataclass(frozen=True, slots=True)
class ProfileItem:
    rating: Rating
    movie: dict[str, Any]


async def _require(model: type[Movie] | type[User], object_id: PydanticObjectId) -> None:
    if await model.get_motor_collection().find_one({"_id": object_id}, {"_id": 1}) is None:
        raise NotFound(f"No {model.Settings.name[:-1]} with that id.")


async def _rated(
    *, user_id: PydanticObjectId, movie_id: PydanticObjectId, queue: TaskQueue, cache: Cache
) -> None:
    # The caller's own profile shows the write at once; the movie's summary and the user's
    # stats follow when the worker recomputes them (and bumps their cache versions).
    await cache.users_changed([user_id])
    missed = await queue.schedule_aggregation(movie_ids=[str(movie_id)], user_ids=[str(user_id)])
    if missed:
        await aggregation.mark_stale(missed=missed)


async def put_rating(
    *,
    user_id: PydanticObjectId,
    movie_id: PydanticObjectId,
    score: float,
    queue: TaskQueue,
    cache: Cache,
) -> tuple[Rating, bool]:
    """Set the caller's score for a movie; True when the rating is new.

    One upsert on the unique (user, movie) pair, plus the movie check for a new rating. On
    MongoDB the upsert is a findAndModify returning the document before it, which tells
    "created" from "changed" and gives rated_at; on SecantusDB, where that is slow, an
    update_one with our own _id on insert tells them apart and a read gives rated_at.
    """
    now = utcnow()
    collection = Rating.get_motor_collection()
    pair = {"user_id": user_id, "movie_id": movie_id}
    new_id = ObjectId()
    update = {
        "$set": {"score": score, "updated_at": now},
        "$setOnInsert": {"_id": new_id, "rated_at": now},
    }
    single_call = server_profile().find_and_modify
    for _ in range(3):
        try:
            if single_call:
                before = await collection.find_one_and_update(
                    pair, update, {"_id": 1, "rated_at": 1}, upsert=True
                )
                created = before is None
            else:
                result = await collection.update_one(pair, update, upsert=True)
                created = result.upserted_id is not None
            break
        except DuplicateKeyError:
            continue  # two first ratings raced: the loser retries, as an update
    else:
        raise ServiceUnavailable("The rating could not be stored; please retry.")
    if created:
        # A rating that exists implies its movie did; a new one must check.
        if await Movie.get_motor_collection().find_one({"_id": movie_id}, {"_id": 1}) is None:
            await collection.delete_one({"_id": new_id})
            # A user recomputation that ran in between would have counted it: redo it.
            await queue.schedule_aggregation(user_ids=[str(user_id)])
            raise NotFound("No movie with that id.")
        rating = Rating(
            id=new_id, user_id=user_id, movie_id=movie_id, score=score, rated_at=now, updated_at=now
        )
    else:
        if not single_call:
            before = await collection.find_one(pair, {"_id": 1, "rated_at": 1})
            if before is None:  # removed by a concurrent DELETE or a movie purge
                raise NotFound("No movie with that id.")
        assert before is not None
        rating = Rating(
            id=before["_id"],
            user_id=user_id,
            movie_id=movie_id,
            score=score,
            rated_at=before["rated_at"],
            updated_at=now,
        )
    await _rated(user_id=user_id, movie_id=movie_id, queue=queue, cache=cache)
    return rating, created


async def get_rating(*, user_id: PydanticObjectId, movie_id: PydanticObjectId) -> Rating:
    """The caller's rating of a movie, or NotFound."""
    rating = await Rating.find_one({"user_id": user_id, "movie_id": movie_id})
    if rating is None:
        raise NotFound("You have not rated this movie.")
    return rating


async def delete_rating(
    *, user_id: PydanticObjectId, movie_id: PydanticObjectId, queue: TaskQueue, cache: Cache
) -> None:
    """Remove the caller's rating of a movie, or NotFound."""
    deleted = await Rating.get_motor_collection().delete_one(
        {"user_id": user_id, "movie_id": movie_id}
    )
    if deleted.deleted_count == 0:
        raise NotFound("You have not rated this movie.")
    await _rated(user_id=user_id, movie_id=movie_id, queue=queue, cache=cache)


async def list_user_ratings(
    *, user_id: PydanticObjectId, sort: str, offset: int, limit: int
) -> Page[ProfileItem]:
    """A profile page: the user's ratings with each movie's card, in two queries."""
    rows = (
        await Rating.find({"user_id": user_id})
        .sort(PROFILE_SORTS[sort])
        .skip(offset)
        .limit(limit + 1)
        .to_list()
    )
    if not rows:
        await _require(User, user_id)
    page = page_of(rows, offset=offset, limit=limit)
    ids = [r.movie_id for r in page.items]
    cursor = Movie.get_motor_collection().find({"_id": {"$in": ids}}, MOVIE_CARD)
    movies = {doc["_id"]: doc async for doc in cursor}
    # A rating whose movie was just deleted is skipped until the purge task removes it.
    items = [ProfileItem(r, movies[r.movie_id]) for r in page.items if r.movie_id in movies]
    return Page(items=items, next_offset=page.next_offset)


async def list_movie_ratings(
    *, movie_id: PydanticObjectId, offset: int, limit: int
) -> Page[Rating]:
    """A movie's ratings, newest first."""
    rows = (
        await Rating.find({"movie_id": movie_id})
        .sort(NEWEST_FIRST)
        .skip(offset)
        .limit(limit + 1)
        .to_list()
    )
    if not rows:
        await _require(Movie, movie_id)
    return page_of(rows, offset=offset, limit=limit)
