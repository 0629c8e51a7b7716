"""Ratings: one per user and movie; every change carries its durable recompute intent."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beanie import PydanticObjectId, SortDirection
from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
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


async def _movie_and_rating(
    *, user_id: PydanticObjectId, movie_id: PydanticObjectId
) -> tuple[bool, dict[str, Any] | None]:
    """Whether the movie exists, and the caller's rating of it, in one round trip."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"user_id": user_id, "movie_id": movie_id}},
        {"$project": {"pending": 0}},
        {
            "$unionWith": {
                "coll": Movie.Settings.name,
                "pipeline": [{"$match": {"_id": movie_id}}, {"$project": {"_id": 1}}],
            }
        },
    ]
    rows = await Rating.get_motor_collection().aggregate(pipeline).to_list(2)
    rating = next((row for row in rows if "user_id" in row), None)
    return any("user_id" not in row for row in rows), rating


async def _changed(*, user_id: PydanticObjectId, queue: TaskQueue, cache: Cache) -> None:
    # The caller's own profile shows the write at once; the movie's summary and the user's
    # stats follow when a drain recomputes them (and bumps their cache versions). The intent
    # is already in MongoDB: if the broker is down, beat's periodic drain finds it.
    await cache.users_changed([user_id])
    await queue.request_drain()


async def put_rating(
    *,
    user_id: PydanticObjectId,
    movie_id: PydanticObjectId,
    score: float,
    queue: TaskQueue,
    cache: Cache,
) -> tuple[Rating, bool]:
    """Set the caller's score for a movie; True when the rating is new.

    Two round trips: a read of the movie and the caller's rating together (a deleted movie is
    refused before anything is written), then one upsert on the unique (user, movie) pair
    that also stamps the rating `pending`, the durable intent to recompute both summaries.
    The answer is what this request wrote, never a read-back of someone else's write.
    """
    exists, before = await _movie_and_rating(user_id=user_id, movie_id=movie_id)
    if not exists:
        raise NotFound("No movie with that id.")
    now = utcnow()
    collection = Rating.get_motor_collection()
    pair = {"user_id": user_id, "movie_id": movie_id}
    new_id = ObjectId()
    update = {
        "$set": {"score": score, "updated_at": now, "pending": aggregation.new_stamp()},
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
    created = result.upserted_id is not None
    if created:
        rating_id, rated_at = new_id, now
    else:
        if before is None:
            # Created by the same user's concurrent request after our read: a third trip,
            # only in that race, for the creation time it set.
            before = await collection.find_one(pair, {"rated_at": 1}) or {
                "_id": new_id,
                "rated_at": now,
            }
        rating_id, rated_at = before["_id"], before["rated_at"]
    await _changed(user_id=user_id, queue=queue, cache=cache)
    rating = Rating(
        id=rating_id,
        user_id=user_id,
        movie_id=movie_id,
        score=score,
        rated_at=rated_at,
        updated_at=now,
    )
    return rating, created


async def get_rating(*, user_id: PydanticObjectId, movie_id: PydanticObjectId) -> Rating:
    """The caller's rating of a movie, or NotFound (also once the movie is deleted)."""
    exists, rating = await _movie_and_rating(user_id=user_id, movie_id=movie_id)
    if not exists:
        raise NotFound("No movie with that id.")
    if rating is None:
        raise NotFound("You have not rated this movie.")
    return Rating.model_validate(rating)


async def delete_rating(
    *, user_id: PydanticObjectId, movie_id: PydanticObjectId, queue: TaskQueue, cache: Cache
) -> None:
    """Remove the caller's rating of a movie, or NotFound.

    The intent is written first: a crash between the two leaves a harmless extra recompute.
    """
    await aggregation.record_intent(movie_ids=[movie_id], user_ids=[user_id])
    deleted = await Rating.get_motor_collection().delete_one(
        {"user_id": user_id, "movie_id": movie_id}
    )
    if deleted.deleted_count == 0:
        raise NotFound("You have not rated this movie.")
    await _changed(user_id=user_id, queue=queue, cache=cache)


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
    await _require(Movie, movie_id)  # a deleted movie's ratings are gone at once
    rows = (
        await Rating.find({"movie_id": movie_id})
        .sort(NEWEST_FIRST)
        .skip(offset)
        .limit(limit + 1)
        .to_list()
    )
    return page_of(rows, offset=offset, limit=limit)
