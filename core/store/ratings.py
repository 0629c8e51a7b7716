"""The ratings collection: one per user and movie, with the server-clock stamp
(`changed_at`) that is every API write's durable intent to recompute its summaries."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from beanie import PydanticObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel, ReturnDocument, UpdateOne
from pymongo.errors import DuplicateKeyError

from core.store.paging import Page, Position, Sort, chunked, keyset_page
from core.store.profile import server_profile
from models import Rating

CHANGED_AT = "changed_at"
# Part of an update that stamps the server's clock: the rating's intent to recompute.
MARK_CHANGED = {"$currentDate": {CHANGED_AT: True}}
_STORED = {"_id": 1, "rated_at": 1, "updated_at": 1}
# Two first ratings of one pair racing: the loser's upsert retries as an update.
_UPSERT_ATTEMPTS = 3

# The indexes of Rating documents (built at start: core.store.indexes).
INDEXES: list[IndexModel] = [
    IndexModel(
        [("user_id", ASCENDING), ("movie_id", ASCENDING)],
        unique=True,
        name="one_rating_per_user_and_movie",
    ),
    IndexModel(
        [("user_id", ASCENDING), ("rated_at", DESCENDING), ("_id", DESCENDING)],
        name="profile_recent",
    ),
    IndexModel(
        [("user_id", ASCENDING), ("score", DESCENDING), ("_id", DESCENDING)],
        name="profile_score",
    ),
    IndexModel(
        [("movie_id", ASCENDING), ("rated_at", DESCENDING), ("_id", DESCENDING)],
        name="movie_recent",
    ),
    # Sparse: holds only the ratings written through the API; the drain's range scan
    # from its mark reads just its backlog (explain: IXSCAN on both servers).
    IndexModel([("changed_at", ASCENDING)], name="drain_order", sparse=True),
]


def _score_update(score: float, now: datetime) -> list[dict[str, Any]]:
    """The upsert as a pipeline: a score equal to the stored one keeps `updated_at` and the
    stamp as they were (the write is then a no-op); anything else sets both, the stamp on
    the server's clock ($$NOW)."""
    same = {"$eq": ["$score", score]}
    return [
        {
            "$set": {
                "updated_at": {"$cond": [same, "$updated_at", now]},
                CHANGED_AT: {"$cond": [same, f"${CHANGED_AT}", "$$NOW"]},
                "rated_at": {"$ifNull": ["$rated_at", now]},
                "score": score,
            }
        }
    ]


async def upsert_score(
    user_id: PydanticObjectId, movie_id: PydanticObjectId, score: float, *, now: datetime
) -> tuple[dict[str, Any], bool] | None:
    """Set one pair's score, stamped; the stored `_id`, `rated_at` and `updated_at`, and
    True when this call created it (`rated_at == now` then). None when the write kept
    colliding. One findAndModify where the server makes that cheap, else an update plus,
    for an existing rating, a read."""
    collection = Rating.get_pymongo_collection()
    pair = {"user_id": user_id, "movie_id": movie_id}
    update = _score_update(score, now)
    single_call = server_profile().find_and_modify
    for _ in range(_UPSERT_ATTEMPTS):
        try:
            if single_call:
                stored = await collection.find_one_and_update(
                    pair, update, _STORED, upsert=True, return_document=ReturnDocument.AFTER
                )
                # Only this request's insert sets rated_at to its own `now` (ms steps).
                created = stored is not None and stored["rated_at"] == now
            else:
                result = await collection.update_one(pair, update, upsert=True)
                created = result.upserted_id is not None
                if created:
                    stored = {"_id": result.upserted_id, "rated_at": now, "updated_at": now}
                else:
                    stored = await collection.find_one(pair, _STORED)
        except DuplicateKeyError:
            continue
        # None: a concurrent DELETE removed it right after this write; the write did happen.
        return stored or {"_id": PydanticObjectId(), "rated_at": now, "updated_at": now}, created
    return None


async def get(user_id: PydanticObjectId, movie_id: PydanticObjectId) -> Rating | None:
    """One user's rating of one movie."""
    return await Rating.find_one({"user_id": user_id, "movie_id": movie_id})


async def delete(
    user_id: PydanticObjectId, movie_id: PydanticObjectId, *, rated_at: datetime | None = None
) -> bool:
    """Remove one user's rating of one movie (only the one created at `rated_at` when
    given); False when there was none."""
    pair: dict[str, Any] = {"user_id": user_id, "movie_id": movie_id}
    if rated_at is not None:
        pair["rated_at"] = rated_at
    result = await Rating.get_pymongo_collection().delete_one(pair)
    return result.deleted_count > 0


async def _find(flt: dict[str, Any], sort: Sort, skip: int, limit: int) -> list[Rating]:
    cursor = Rating.get_pymongo_collection().find(flt, sort=sort, skip=skip, limit=limit)
    return [Rating.model_validate(doc) async for doc in cursor]


async def page(
    *,
    user_id: PydanticObjectId | None = None,
    movie_id: PydanticObjectId | None = None,
    sort: Sort,
    after: Position | None,
    offset: int,
    limit: int,
) -> Page[Rating]:
    """A page of one user's (or one movie's) ratings in `sort` order, after `after` (keyset)
    or the first `offset`."""
    flt = {"user_id": user_id} if user_id is not None else {"movie_id": movie_id}
    field = sort[0][0]
    return await keyset_page(
        _find, flt=flt, sort=sort, after=after, offset=offset, limit=limit,
        position=lambda rating: (getattr(rating, field), rating.id),
    )  # fmt: skip


async def scores_of(user_id: PydanticObjectId) -> dict[PydanticObjectId, float]:
    """Every score one user gave, by movie."""
    cursor = Rating.get_pymongo_collection().find(
        {"user_id": user_id}, {"movie_id": 1, "score": 1, "_id": 0}
    )
    return {doc["movie_id"]: doc["score"] async for doc in cursor}


@dataclass
class Moved:
    """What moving one movie's ratings to another did."""

    users: set[Any] = field(default_factory=set)  # every rater of the moved movie
    moved: int = 0  # ratings now on the other movie
    replaced: int = 0  # the user rated both: their newer rating replaced the older
    dropped: int = 0  # the user rated both: their older rating went


async def move_to(from_movie: PydanticObjectId, to_movie: PydanticObjectId) -> Moved:
    """Move every rating of `from_movie` to `to_movie`, each stamped; where a user rated
    both, their newer rating is kept on `to_movie`."""
    ratings = Rating.get_pymongo_collection()
    done = Moved()
    async for rating in ratings.find({"movie_id": from_movie}):
        done.users.add(rating["user_id"])
        try:
            moved = await ratings.update_one(
                {"_id": rating["_id"]}, {"$set": {"movie_id": to_movie}, **MARK_CHANGED}
            )
            if moved.modified_count:
                done.moved += 1
                continue
        except DuplicateKeyError:
            pass  # the user rated both
        theirs = await ratings.find_one({"user_id": rating["user_id"], "movie_id": to_movie})
        if theirs is not None and rating["updated_at"] > theirs["updated_at"]:
            newer = {k: rating[k] for k in ("score", "rated_at", "updated_at")}
            await ratings.update_one(
                {"_id": theirs["_id"], "updated_at": theirs["updated_at"]},
                {"$set": newer, **MARK_CHANGED},
            )
            done.replaced += 1
        else:
            done.dropped += 1
        await ratings.delete_one({"_id": rating["_id"]})
    return done


async def raters_of(movie_id: PydanticObjectId) -> set[Any]:
    """The users who rated a movie."""
    return set(await Rating.get_pymongo_collection().distinct("user_id", {"movie_id": movie_id}))


async def of_users(user_ids: list[Any]) -> AsyncIterator[dict[str, Any]]:
    """Every rating of these users: its id, movie, user, score and time."""
    fields = {"movie_id": 1, "user_id": 1, "score": 1, "rated_at": 1}
    collection = Rating.get_pymongo_collection()
    for part in chunked(user_ids):
        async for doc in collection.find({"user_id": {"$in": part}}, fields):
            yield doc


async def write_imported(inserts: list[dict[str, Any]], changes: dict[Any, dict[str, Any]]) -> None:
    """Insert new imported ratings and set changed fields on existing ones (unstamped: the
    import records its own intents). insert_many is several times faster than the same
    inserts inside a bulk write."""
    collection = Rating.get_pymongo_collection()
    if inserts:
        await collection.insert_many(inserts, ordered=False)
    if changes:
        await collection.bulk_write(
            [UpdateOne({"_id": i}, {"$set": c}) for i, c in changes.items()], ordered=False
        )
