"""Exact rating aggregates, recomputed from the ratings themselves by the workers."""

from __future__ import annotations

import logging
from typing import Any

from beanie import PydanticObjectId
from pymongo import ReturnDocument

from models import SCORES, GlobalRatingStats, Movie, Rating, RatingStats, User, bucket, utcnow

log = logging.getLogger(__name__)


def weighted_score(*, count: int, mean: float | None, prior_votes: float, prior_mean: float | None):
    """Bayesian weighted score WR = v/(v+m)·R + m/(v+m)·C; None when nothing is rated."""
    if not count or mean is None:
        return None
    if prior_mean is None or prior_votes == 0:
        return mean
    return count / (count + prior_votes) * mean + prior_votes / (count + prior_votes) * prior_mean


async def _histogram(field: str, object_id: PydanticObjectId) -> list[int]:
    """One pipeline: how many ratings of each half star the movie or user has."""
    histogram = [0] * len(SCORES)
    pipeline: list[dict[str, Any]] = [
        {"$match": {field: object_id}},
        {"$group": {"_id": "$score", "n": {"$sum": 1}}},
    ]
    async for row in Rating.get_motor_collection().aggregate(pipeline):
        histogram[bucket(row["_id"])] = row["n"]
    return histogram


async def _take_ticket(collection: Any, object_id: PydanticObjectId) -> int | None:
    """A number that orders recomputations of one document; None if it is gone."""
    doc = await collection.find_one_and_update(
        {"_id": object_id},
        {"$inc": {"agg_ticket": 1}},
        projection={"agg_ticket": 1},
        return_document=ReturnDocument.AFTER,
    )
    return None if doc is None else doc["agg_ticket"]


async def _store_if_newer(collection: Any, object_id: PydanticObjectId, field: str, stats: dict):
    # The ticket was taken before reading the ratings, so a higher ticket saw at least as much:
    # an older computation finishing late must not overwrite a newer one. The guard is a
    # pipeline update on _id alone, which every server answers from the _id index.
    await collection.update_one(
        {"_id": object_id},
        [
            {
                "$set": {
                    field: {
                        "$cond": [
                            {"$lt": [{"$ifNull": [f"${field}.ticket", 0]}, stats["ticket"]]},
                            {"$literal": stats},
                            f"${field}",
                        ]
                    }
                }
            }
        ],
    )


async def global_mean() -> float | None:
    """The catalogue-wide mean C, computing it once if it was never stored."""
    stored = await GlobalRatingStats.get("ratings")
    if stored is not None:
        return stored.mean
    return (await refresh_global_mean()).mean


async def refresh_global_mean() -> GlobalRatingStats:
    """Recompute C from the movies' exact summaries and store it."""
    pipeline = [
        {"$group": {"_id": None, "sum": {"$sum": "$rating.sum"}, "n": {"$sum": "$rating.count"}}}
    ]
    rows = await Movie.get_motor_collection().aggregate(pipeline).to_list(1)
    total, count = (rows[0]["sum"], rows[0]["n"]) if rows else (0.0, 0)
    stats = GlobalRatingStats(mean=total / count if count else None, votes=count)
    await GlobalRatingStats.get_motor_collection().replace_one(
        {"_id": "ratings"}, stats.model_dump(by_alias=True), upsert=True
    )
    return stats


async def recompute_movie_summary(*, movie_id: PydanticObjectId, prior_votes: float) -> bool:
    """Rebuild one movie's summary exactly from its ratings; False if the movie is gone."""
    collection = Movie.get_motor_collection()
    ticket = await _take_ticket(collection, movie_id)
    if ticket is None:
        return False
    histogram = await _histogram("movie_id", movie_id)
    stats = RatingStats.from_histogram(histogram, ticket=ticket, updated_at=utcnow())
    summary = stats.model_dump()
    summary["weighted"] = weighted_score(
        count=stats.count, mean=stats.mean, prior_votes=prior_votes, prior_mean=await global_mean()
    )
    await _store_if_newer(collection, movie_id, "rating", summary)
    return True


async def recompute_user_stats(*, user_id: PydanticObjectId) -> bool:
    """Rebuild one user's stats exactly from their ratings; False if the user is gone."""
    collection = User.get_motor_collection()
    ticket = await _take_ticket(collection, user_id)
    if ticket is None:
        return False
    histogram = await _histogram("user_id", user_id)
    stats = RatingStats.from_histogram(histogram, ticket=ticket, updated_at=utcnow())
    await _store_if_newer(collection, user_id, "stats", stats.model_dump())
    return True


async def refresh_weighted_scores(*, prior_votes: float) -> GlobalRatingStats:
    """Refresh C, then every movie's weighted score in one server-side update."""
    stats = await refresh_global_mean()
    count, mean, m = "$rating.count", "$rating.mean", prior_votes
    if stats.mean is None or m == 0:
        weighted: Any = {"$cond": [{"$gt": [count, 0]}, mean, None]}
    else:
        weighted = {
            "$cond": [
                {"$gt": [count, 0]},
                {
                    "$add": [
                        {"$multiply": [{"$divide": [count, {"$add": [count, m]}]}, mean]},
                        {"$multiply": [{"$divide": [m, {"$add": [count, m]}]}, stats.mean]},
                    ]
                },
                None,
            ]
        }
    await Movie.get_motor_collection().update_many({}, [{"$set": {"rating.weighted": weighted}}])
    log.info("weighted scores refreshed", extra={"global_mean": stats.mean, "votes": stats.votes})
    return stats


async def purge_movie_ratings(*, movie_id: PydanticObjectId) -> list[str]:
    """Delete the ratings of a deleted movie; returns the users whose stats changed."""
    if await Movie.get_motor_collection().find_one({"_id": movie_id}, {"_id": 1}) is not None:
        return []  # the movie exists: nothing to purge (a stale or replayed task)
    collection = Rating.get_motor_collection()
    user_ids = await collection.distinct("user_id", {"movie_id": movie_id})
    await collection.delete_many({"movie_id": movie_id})
    return [str(u) for u in user_ids]
