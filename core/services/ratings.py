"""Ratings: one per user and movie; every change carries its durable recompute intent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId, SortDirection
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
from core.db import server_profile
from core.errors import NotFound, ServiceUnavailable
from core.queue import TaskQueue
from core.services import Page, Position, Sort, aggregation, keyset_page
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


async def _movie_exists(movie_id: PydanticObjectId, cache: Cache) -> bool:
    """Ask the database (the second round trip of a new rating), and remember a yes."""
    if await Movie.get_motor_collection().find_one({"_id": movie_id}, {"_id": 1}) is None:
        return False
    cache.known_movies.seen(movie_id)
    return True


async def _changed(*, user_id: PydanticObjectId, queue: TaskQueue, cache: Cache) -> None:
    # The caller's own profile shows the write at once; the movie's summary and the user's
    # stats follow when a drain recomputes them (and bumps their cache versions). The intent
    # is already in MongoDB: if the broker is down, beat's periodic drain finds it.
    await cache.users_changed([user_id])
    await queue.request_drain()


def _score_update(score: float, now: datetime) -> list[dict[str, Any]]:
    """The upsert as a pipeline: a score equal to the stored one keeps `updated_at` and the
    drain mark as they were (the write is then a no-op); anything else stamps both, with the
    mark on the server's clock ($$NOW), the durable intent to recompute."""
    same = {"$eq": ["$score", score]}
    return [
        {
            "$set": {
                "updated_at": {"$cond": [same, "$updated_at", now]},
                aggregation.CHANGED_AT: {"$cond": [same, f"${aggregation.CHANGED_AT}", "$$NOW"]},
                "rated_at": {"$ifNull": ["$rated_at", now]},
                "score": score,
            }
        }
    ]


async def put_rating(
    *,
    user_id: PydanticObjectId,
    movie_id: PydanticObjectId,
    score: float,
    queue: TaskQueue,
    cache: Cache,
) -> tuple[Rating, bool]:
    """Set the caller's score for a movie; True when the rating is new.

    One upsert on the unique (user, movie) pair that also stamps the rating's `changed_at`
    with the server's clock, the durable intent to recompute both summaries, then at most
    one more round trip: a new rating checks its movie exists, unless this process saw it
    exist lately (KnownMovies: a movie deleted meanwhile takes such a rating with it at the
    next drain); an existing one reads its creation time (a deleted movie's ratings go with
    it, so an existing rating implies its movie; on MongoDB the upsert is a findAndModify
    that returns the rating as written). An unchanged score changes nothing, not even
    `updated_at`, and asks for no drain. The answer is what this request wrote, never a
    read-back of another write.
    """
    now = utcnow()
    collection = Rating.get_motor_collection()
    pair = {"user_id": user_id, "movie_id": movie_id}
    update = _score_update(score, now)
    fields = {"_id": 1, "rated_at": 1, "updated_at": 1}
    single_call = server_profile().find_and_modify
    stored: dict[str, Any] | None = None
    for _ in range(3):
        try:
            if single_call:
                stored = await collection.find_one_and_update(
                    pair, update, fields, upsert=True, return_document=ReturnDocument.AFTER
                )
                # Only this request's insert sets rated_at to its own `now` (ms steps).
                created = stored is not None and stored["rated_at"] == now
            else:
                result = await collection.update_one(pair, update, upsert=True)
                created = result.upserted_id is not None
                if created:
                    stored = {"_id": result.upserted_id, "rated_at": now, "updated_at": now}
            break
        except DuplicateKeyError:
            continue  # two first ratings raced: the loser retries, as an update
    else:
        raise ServiceUnavailable("The rating could not be stored; please retry.")
    if created:
        if not cache.known_movies.known(movie_id) and not await _movie_exists(movie_id, cache):
            # No such movie (or deleted meanwhile). Its mark is gone with it; the user's
            # stats never counted it unless a drain ran in between, which the next one fixes.
            await aggregation.record_intent(user_ids=[user_id])
            await collection.delete_one(pair | {"rated_at": now})
            raise NotFound("No movie with that id.")
    elif not single_call:
        stored = await collection.find_one(pair, fields)
    # None: a concurrent DELETE removed it right after this write; the write did happen.
    stored = stored or {"_id": ObjectId(), "rated_at": now, "updated_at": now}
    if stored["updated_at"] == now or created:
        await _changed(user_id=user_id, queue=queue, cache=cache)
    rating = Rating(
        id=stored["_id"],
        user_id=user_id,
        movie_id=movie_id,
        score=score,
        rated_at=stored["rated_at"],
        updated_at=stored["updated_at"],
    )
    return rating, created


async def get_rating(*, user_id: PydanticObjectId, movie_id: PydanticObjectId) -> Rating:
    """The caller's rating of a movie, or NotFound (a deleted movie's ratings go with it)."""
    rating = await Rating.find_one({"user_id": user_id, "movie_id": movie_id})
    if rating is None:
        raise NotFound("You have not rated this movie.")
    return rating


async def delete_rating(
    *, user_id: PydanticObjectId, movie_id: PydanticObjectId, queue: TaskQueue, cache: Cache
) -> None:
    """Remove the caller's rating of a movie, or NotFound.

    The intent is written first: a crash between the two leaves a harmless extra recompute.
    """
    intent = await aggregation.record_intent(movie_ids=[movie_id], user_ids=[user_id])
    deleted = await Rating.get_motor_collection().delete_one(
        {"user_id": user_id, "movie_id": movie_id}
    )
    if deleted.deleted_count == 0:
        await aggregation.withdraw_intent(intent)
        raise NotFound("You have not rated this movie.")
    await _changed(user_id=user_id, queue=queue, cache=cache)


async def _find(flt: dict[str, Any], sort: Sort, skip: int, limit: int) -> list[Rating]:
    """Ratings read with the driver, not Beanie: see core.services.movies._find."""
    cursor = Rating.get_motor_collection().find(flt, sort=sort, skip=skip, limit=limit)
    return [Rating.model_validate(doc) async for doc in cursor]


def _position(sort: Sort) -> Callable[[Rating], Position]:
    field = sort[0][0]
    return lambda rating: (getattr(rating, field), rating.id)


async def list_user_ratings(
    *, user_id: PydanticObjectId, sort: str, limit: int, after: Position | None = None,
    offset: int = 0,
) -> Page[ProfileItem]:  # fmt: skip
    """A profile page after `after` (else the first `offset`): the user's ratings with
    each movie's card, in two queries."""
    order = PROFILE_SORTS[sort]
    page = await keyset_page(
        _find, flt={"user_id": user_id}, sort=order, after=after, offset=offset,
        limit=limit, position=_position(order),
    )  # fmt: skip
    if not page.items:
        await _require(User, user_id)
    ids = [r.movie_id for r in page.items]
    cursor = Movie.get_motor_collection().find({"_id": {"$in": ids}}, MOVIE_CARD)
    movies = {doc["_id"]: doc async for doc in cursor}
    # A rating whose movie was just deleted is skipped until the purge task removes it.
    items = [ProfileItem(r, movies[r.movie_id]) for r in page.items if r.movie_id in movies]
    return Page(items=items, after=page.after)


async def list_movie_ratings(
    *, movie_id: PydanticObjectId, limit: int, after: Position | None = None, offset: int = 0
) -> Page[Rating]:
    """A movie's ratings, newest first, after `after` (else the first `offset`)."""
    page = await keyset_page(
        _find, flt={"movie_id": movie_id}, sort=NEWEST_FIRST, after=after, offset=offset,
        limit=limit, position=_position(NEWEST_FIRST),
    )  # fmt: skip
    if not page.items:
        await _require(Movie, movie_id)
    return page
