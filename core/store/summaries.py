"""What the summaries are kept from and stored in: histograms of the ratings, summary
versions (compare-and-set), the published global mean, recompute intents, the drain's mark
on the server's clock, and the rating writes stamped after it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import ASCENDING, IndexModel, UpdateOne

from core.store.paging import chunked
from core.store.profile import server_profile
from core.store.ratings import CHANGED_AT
from models import (
    SCORES,
    DrainMark,
    GlobalRatingStats,
    Movie,
    Rating,
    SummaryIntent,
    User,
    bucket,
)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MARK = "ratings"

# The drain asks for job_id = None, then per ended import: both served by this.
INTENT_INDEXES: list[IndexModel] = [IndexModel([("job_id", ASCENDING)], name="intents_by_job")]


@dataclass(frozen=True, slots=True)
class Target:
    """What a summary is kept on: the document, its summary field, the ratings' id field."""

    document: type[Movie] | type[User]
    summary_field: str
    rating_field: str

    @property
    def name(self) -> str:
        """The collection's name."""
        return str(self.document.Settings.name)


MOVIES = Target(Movie, "rating", "movie_id")
USERS = Target(User, "stats", "user_id")


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


async def histograms(
    target: Target, ids: list[Any], *, everything: bool = False
) -> dict[Any, list[int]]:
    """Histograms of the ratings of each id: one $group over the whole collection when most
    documents are wanted (one pass), else over $in matches of the server's match size."""
    field = target.rating_field
    counts: dict[Any, list[int]] = {i: [0] * len(SCORES) for i in ids}
    group = {"$group": {"_id": {"k": f"${field}", "s": "$score"}, "n": {"$sum": 1}}}
    if everything:
        pipelines: list[list[dict[str, Any]]] = [[group]]
    else:
        size = server_profile().match_batch
        pipelines = [[{"$match": {field: {"$in": part}}}, group] for part in chunked(ids, size)]
    ratings = Rating.get_pymongo_collection()
    for pipeline in pipelines:
        async for row in await ratings.aggregate(pipeline, allowDiskUse=True):
            key = row["_id"]["k"]
            if key in counts:
                counts[key][bucket(row["_id"]["s"])] = row["n"]
    return counts


async def versions(target: Target, ids: list[Any]) -> dict[Any, Any]:
    """The stored summary version of each id that exists."""
    collection = target.document.get_pymongo_collection()
    version = f"{target.summary_field}.version"
    found: dict[Any, Any] = {}
    for part in chunked(ids):
        async for doc in collection.find({"_id": {"$in": part}}, {version: 1}):
            found[doc["_id"]] = (doc.get(target.summary_field) or {}).get("version")
    return found


async def store_over(target: Target, writes: list[tuple[Any, Any, dict[str, Any]]]) -> int:
    """Store each (id, version read, summary) only where that version is still stored, in
    one unordered bulk write; how many matched."""
    version_field = f"{target.summary_field}.version"
    updates = [
        UpdateOne({"_id": i, version_field: read}, {"$set": {target.summary_field: summary}})
        for i, read, summary in writes
    ]
    if not updates:
        return 0
    result = await target.document.get_pymongo_collection().bulk_write(updates, ordered=False)
    return result.matched_count


async def count(target: Target) -> int:
    """How many documents the target has (the collection's estimate: no scan)."""
    return await target.document.get_pymongo_collection().estimated_document_count()


async def stored_summaries(target: Target, *, batch: int) -> AsyncIterator[list[dict[str, Any]]]:
    """Every document's id and summary, `batch` at a time."""
    cursor = target.document.get_pymongo_collection().find(
        {}, {target.summary_field: 1}, batch_size=batch
    )
    while docs := await cursor.to_list(batch):
        yield docs


async def published() -> GlobalRatingStats | None:
    """The published global mean C."""
    return await GlobalRatingStats.get("ratings")


async def publish(*, mean: float | None, votes: int) -> GlobalRatingStats:
    """Publish a global mean C."""
    stats = GlobalRatingStats(mean=mean, votes=votes)
    await GlobalRatingStats.get_pymongo_collection().replace_one(
        {"_id": "ratings"}, stats.model_dump(by_alias=True), upsert=True
    )
    return stats


async def totals_of_summaries() -> tuple[float, int]:
    """The sum and count of every score, from the movies' summaries (far fewer documents)."""
    pipeline = [
        {"$group": {"_id": None, "sum": {"$sum": "$rating.sum"}, "n": {"$sum": "$rating.count"}}}
    ]
    rows = await (await Movie.get_pymongo_collection().aggregate(pipeline)).to_list(1)
    return (rows[0]["sum"], rows[0]["n"]) if rows else (0.0, 0)


async def totals_of_ratings() -> tuple[float, int]:
    """The sum and count of every score, from the ratings themselves."""
    pipeline = [{"$group": {"_id": None, "sum": {"$sum": "$score"}, "n": {"$sum": 1}}}]
    rows = await (await Rating.get_pymongo_collection().aggregate(pipeline)).to_list(1)
    return (rows[0]["sum"], rows[0]["n"]) if rows else (0.0, 0)


async def weighted_with() -> AsyncIterator[tuple[Any, Any]]:
    """Each rated movie's id and the C its weighted score was computed with ("unset" when
    none is recorded)."""
    cursor = Movie.get_pymongo_collection().find(
        {"rating.count": {"$gt": 0}}, {"_id": 1, "rating.prior_mean": 1}
    )
    async for doc in cursor:
        yield doc["_id"], doc["rating"].get("prior_mean", "unset")


async def movie_ids() -> list[Any]:
    """Every movie's id."""
    return [d["_id"] async for d in Movie.get_pymongo_collection().find({}, {"_id": 1})]


async def rewrite_weighted(ids: list[Any], *, prior_votes: float, mean: float | None) -> None:
    """Set these movies' weighted scores from their own count and mean at the moment of the
    write and C = `mean`, each under a new summary version (so a recomputation that read an
    older C loses its compare-and-set)."""
    count, avg, m = "$rating.count", "$rating.mean", prior_votes
    if mean is None or m == 0:
        weighted: Any = avg
    else:
        weighted = {
            "$cond": [
                {"$gt": [count, 0]},
                {
                    "$add": [
                        {"$multiply": [{"$divide": [count, {"$add": [count, m]}]}, avg]},
                        {"$multiply": [{"$divide": [m, {"$add": [count, m]}]}, mean]},
                    ]
                },
                None,
            ]
        }
    # By _id alone: a second condition here lets SecantusDB pick a worse index.
    await Movie.get_pymongo_collection().update_many(
        {"_id": {"$in": ids}},
        [
            {
                "$set": {
                    "rating.weighted": weighted,
                    "rating.prior_mean": mean,
                    "rating.version": ObjectId(),
                }
            }
        ],
    )


async def insert_intent(
    *, movie_ids: Iterable[Any] = (), user_ids: Iterable[Any] = (), job_id: Any = None
) -> PydanticObjectId:
    """Store a recompute intent; its id."""
    intent = SummaryIntent(movie_ids=list(movie_ids), user_ids=list(user_ids), job_id=job_id)
    stored = intent.model_dump(by_alias=True, exclude={"id"})
    result = await SummaryIntent.get_pymongo_collection().insert_one(stored)
    return PydanticObjectId(result.inserted_id)


async def delete_intents(ids: list[Any]) -> int:
    """Remove these intents; how many there were."""
    deleted = 0
    for part in chunked(ids):
        result = await SummaryIntent.get_pymongo_collection().delete_many({"_id": {"$in": part}})
        deleted += result.deleted_count
    return deleted


async def intents(*, job_ids: list[Any] | None = None, limit: int = 0) -> list[SummaryIntent]:
    """Intents of no import (`job_ids` None) or of these imports, at most `limit` (0: all)."""
    flt = {"job_id": None} if job_ids is None else {"job_id": {"$in": job_ids}}
    docs = await SummaryIntent.get_pymongo_collection().find(flt).to_list(limit or None)
    return [SummaryIntent.model_validate(doc) for doc in docs]


async def import_tags(*, since: datetime | None = None, among: list[Any] | None = None) -> set:
    """The imports that wrote intents still here (`among` these, the last after `since`)."""
    flt: dict[str, Any] = {"job_id": {"$ne": None} if among is None else {"$in": among}}
    if since is not None:
        flt["created_at"] = {"$gt": since}
    return set(await SummaryIntent.get_pymongo_collection().distinct("job_id", flt))


async def any_import_intent() -> bool:
    """Whether an import left an intent no one has recomputed yet."""
    found = await SummaryIntent.get_pymongo_collection().find_one(
        {"job_id": {"$ne": None}}, {"_id": 1}
    )
    return found is not None


async def count_intents() -> int:
    """How many intents wait."""
    return await SummaryIntent.get_pymongo_collection().count_documents({})


async def server_now() -> datetime:
    """The database server's clock, the one `$currentDate` stamps writes with."""
    hello = await Rating.get_pymongo_collection().database.command("hello")
    return _utc(hello["localTime"])


async def drained_before() -> datetime:
    """The drain's mark: every rating write stamped before it is in the summaries."""
    mark = await DrainMark.get_pymongo_collection().find_one({"_id": _MARK})
    return _utc(mark["drained_before"]) if mark else EPOCH


async def move_mark(until: datetime) -> None:
    """Every rating write stamped before `until` is in the summaries. $max: a slower drain
    (or an import's last step) that started earlier never moves the mark back."""
    await DrainMark.get_pymongo_collection().update_one(
        {"_id": _MARK}, {"$max": {"drained_before": until}}, upsert=True
    )


async def stamped_writes(since: datetime, until: datetime) -> AsyncIterator[dict[str, Any]]:
    """The rating writes stamped in [since, until), oldest first: each one's movie_id,
    user_id and stamp. A range walk of the sparse stamp index, read as a stream."""
    fields = {"movie_id": 1, "user_id": 1, CHANGED_AT: 1, "_id": 0}
    cursor = (
        Rating.get_pymongo_collection()
        .find({CHANGED_AT: {"$gte": since, "$lt": until}}, fields)
        .sort(CHANGED_AT, 1)
        .batch_size(1000)
    )
    try:
        async for write in cursor:
            yield write
    finally:
        await cursor.close()


async def oldest_stamp(since: datetime) -> datetime | None:
    """The stamp of the oldest rating write at or after `since`."""
    oldest = await Rating.get_pymongo_collection().find_one(
        {CHANGED_AT: {"$gte": since}}, {CHANGED_AT: 1}, sort=[(CHANGED_AT, 1)]
    )
    return None if oldest is None else _utc(oldest[CHANGED_AT])


async def count_stamped(since: datetime) -> int:
    """How many rating writes are stamped at or after `since`."""
    return await Rating.get_pymongo_collection().count_documents({CHANGED_AT: {"$gte": since}})


async def named_by_ratings(target: Target, **where: Any) -> list[Any]:
    """The distinct ids of `target` the ratings (matching `where`) name."""
    return list(await Rating.get_pymongo_collection().distinct(target.rating_field, where))


async def rated(target: Target, object_id: Any) -> bool:
    """Whether any rating names this id on `target`'s side."""
    found = await Rating.get_pymongo_collection().find_one(
        {target.rating_field: object_id}, {"_id": 1}
    )
    return found is not None


async def count_ratings_naming(target: Target, ids: list[Any]) -> int:
    """How many ratings name one of these ids on `target`'s side."""
    total = 0
    for part in chunked(ids):
        total += await Rating.get_pymongo_collection().count_documents(
            {target.rating_field: {"$in": part}}
        )
    return total


async def delete_ratings_naming(target: Target, object_id: Any) -> None:
    """Remove every rating naming this id on `target`'s side."""
    await Rating.get_pymongo_collection().delete_many({target.rating_field: object_id})
