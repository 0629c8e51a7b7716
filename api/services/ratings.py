"""Ratings: one per user and movie; every change schedules exact re-aggregation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beanie import PydanticObjectId, SortDirection
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from api.cache import Cache
from api.errors import NotFound, ServiceUnavailable
from api.queue import TaskQueue
from api.services import Page, aggregation, page_of
from models import Movie, Rating, User, utcnow

DESC = SortDirection.DESCENDING
PROFILE_SORTS: dict[str, list[tuple[str, SortDirection]]] = {
    "recent": [("rated_at", DESC), ("_id", DESC)],
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

    Two round trips either way: an upsert, then the movie check (new rating) or the stored
    rating (changed one). findAndModify would be one, but on SecantusDB it is ~600 ms when
    it modifies an existing document, against ~2 ms for update_one.
    """
    now = utcnow()
    collection = Rating.get_motor_collection()
    pair = {"user_id": user_id, "movie_id": movie_id}
    # Our own _id on insert tells "created" from "changed" without a read-before-write.
    new_id = ObjectId()
    update = {
        "$set": {"score": score, "updated_at": now},
        "$setOnInsert": {"_id": new_id, "rated_at": now},
    }
    for _ in range(3):
        try:
            result = await collection.update_one(pair, update, upsert=True)
            break
        except DuplicateKeyError:
            continue  # two first ratings raced: the loser retries, as an update
    else:
        raise ServiceUnavailable("The rating could not be stored; please retry.")
    if result.upserted_id is not None:
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
        stored = await collection.find_one(pair)
        if stored is None:  # removed by a concurrent DELETE or a movie purge
            raise NotFound("No movie with that id.")
        rating = Rating.model_validate(stored)
    await _rated(user_id=user_id, movie_id=movie_id, queue=queue, cache=cache)
    return rating, result.upserted_id is not None


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
    # delete_one, not findAndModify: the latter is slow on SecantusDB (see put_rating).
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
        .sort(PROFILE_SORTS["recent"])
        .skip(offset)
        .limit(limit + 1)
        .to_list()
    )
    if not rows:
        await _require(Movie, movie_id)
    return page_of(rows, offset=offset, limit=limit)
