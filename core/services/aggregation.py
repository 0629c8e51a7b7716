"""Exact rating summaries, kept by draining durable recompute intents.

Intents: a PUT sets its rating's `changed_at` to the database server's clock in the same
write (`$currentDate`); a rating DELETE, a movie deletion and each import batch insert a
SummaryIntent before their write. So a crash at any instant leaves either no write, or a
write plus its intent. A drain round takes the rating writes from its mark (`DrainMark`) up
to `settle` seconds before the server's present, and a bounded batch of intents, recomputes
every movie and user they name, and only then moves the mark and deletes those intents.
Writes are never cleared one by one: the mark moves past them, and a write landing meanwhile
carries a later time. `settle` covers writes whose time was taken just before the round
asked for the present but that became visible just after.

Ordering is per document (compare-and-set): a recomputation reads the summary's `version`,
then the published C and the ratings, and stores only over that same version, setting a new
one; a loser reads again. The weighted rewrite that follows a new C goes through the same
versions (it sets a new one on every movie it rewrites). So every stored summary was read
after the one it replaced, and one that was computed with an older C either loses its
compare-and-set to the rewrite or is stored before the rewrite reaches it.

Each movie summary records the C it was weighted with (`prior_mean`); C is published only
while no import is writing, from the movies' summaries (or by an import's last step, from
the ratings), and a refresh also rewrites any rated movie weighted with another C.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from beanie import PydanticObjectId
from bson import ObjectId
from pymongo import UpdateOne

from core.db import server_profile
from core.services import chunked
from core.services.leases import IMPORT_LEASE
from models import (
    FINISHED,
    SCORES,
    DrainMark,
    GlobalRatingStats,
    ImportJob,
    Lease,
    Movie,
    Rating,
    RatingStats,
    SummaryIntent,
    User,
    bucket,
    utcnow,
)

log = logging.getLogger(__name__)
CAS_ATTEMPTS = 8
CHANGED_AT = "changed_at"
# Stamped on a rating by the write itself: the server's clock, so the drain's mark and the
# writes it takes are read off one clock.
MARK_CHANGED = {"$currentDate": {CHANGED_AT: True}}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DRAIN_REST_MAX = 4.0
# A paced recomputation stores this many summaries per write, then rests: one write of a
# round's hundred movie summaries held SecantusDB, which runs one command at a time, for
# 4-6 s under a PUT load, and every request queued behind it.
PACED_WRITE_BATCH = 10
# A round reads at most this many rating writes per summary it may recompute: writes to the
# same movies are one recomputation, and reading them is cheap next to storing summaries.
WRITES_PER_SUMMARY = 10
# An import's last step then recomputes the rating writes that landed while it wrote its
# own summaries, in at most this many passes (each shorter than the one before).
CATCH_UP_PASSES = 2
# While an import writes, a drain round takes this share of its usual batch.
IMPORT_ROUND_SHARE = 10
# A command-line import (no job document) writes an intent per batch, seconds apart: one
# silent this long has stopped, and the drain takes over what it left.
IMPORT_TAG_QUIET = timedelta(minutes=10)
SummaryExtra = Callable[[dict[str, Any]], dict[str, Any]]
Changed = Callable[[list[ObjectId]], Awaitable[None]]
ImportRunning = Callable[[], Awaitable[bool]]
SummariesChanged = Callable[[list[ObjectId], list[ObjectId]], Awaitable[None]]


class Pace:
    """Rests so that the work between rests keeps the database busy at most `duty` of the
    time (resting at most `rest_max` at once, so results stay fresh), while `others_busy`
    says people are waiting on the database; with nobody waiting it does not rest."""

    def __init__(
        self,
        duty: float,
        *,
        rest_max: float = DRAIN_REST_MAX,
        others_busy: Callable[[], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.duty = duty
        self.rest_max = rest_max
        self._others_busy = others_busy
        self._clock = clock
        self._sleep = sleep
        self._busy_since = clock()
        # Asked after every rest: True when someone else already did this work (an import's
        # last step moved the drain's mark past the round's writes), and the round stops.
        self.overtaken: Callable[[], Awaitable[bool]] = _never

    async def rest(self, *, at_least: float = 0.0) -> None:
        """Sleep in proportion to the time worked since the last rest."""
        worked = self._clock() - self._busy_since
        share = min(worked * (1 / self.duty - 1), self.rest_max)
        if self._others_busy is not None and not await self._others_busy():
            share = 0.0
        await self._sleep(max(share, at_least))
        self._busy_since = self._clock()


async def _never() -> bool:
    return False


class Overtaken(Exception):
    """A paced recomputation stopped because its work was done by someone else."""

    def __init__(self, stored: list[ObjectId]) -> None:
        super().__init__("overtaken")
        self.stored = stored  # what it stored before it stopped


@dataclass(frozen=True, slots=True)
class Target:
    """What a summary is kept on: the document, its summary field, the ratings' id field."""

    document: type[Movie] | type[User]
    summary_field: str
    rating_field: str


MOVIES = Target(Movie, "rating", "movie_id")
USERS = Target(User, "stats", "user_id")


@dataclass
class Recomputed:
    """What one recomputation stored, and which of the ids it was given do not exist."""

    stored: list[ObjectId] = field(default_factory=list)
    missing: list[ObjectId] = field(default_factory=list)


@dataclass
class DrainReport:
    """What a drain did: summaries stored, deleted movies purged, intents cleared."""

    movies: list[ObjectId] = field(default_factory=list)
    users: list[ObjectId] = field(default_factory=list)
    purged_movies: list[ObjectId] = field(default_factory=list)
    taken: int = 0
    rounds: int = 0
    waiting: bool = False  # writes too recent for this round: the next one takes them
    more: bool = False  # ripe writes beyond this round's batch: the next round takes them

    @property
    def empty(self) -> bool:
        return not (self.movies or self.users or self.purged_movies or self.taken)


def weighted_score(
    *, count: int, mean: float | None, prior_votes: float, prior_mean: float | None
) -> float | None:
    """Bayesian weighted score WR = v/(v+m)·R + m/(v+m)·C; None when nothing is rated."""
    if not count or mean is None:
        return None
    if prior_mean is None or prior_votes == 0:
        return mean
    return count / (count + prior_votes) * mean + prior_votes / (count + prior_votes) * prior_mean


async def histograms(field: str, ids: list[ObjectId], *, everything: bool = False) -> dict:
    """Histograms of ratings per movie or user: one $group over the whole collection when
    most documents are wanted (one pass), else over chunked $in matches (index walks)."""
    counts: dict[Any, list[int]] = {i: [0] * len(SCORES) for i in ids}
    group = {"$group": {"_id": {"k": f"${field}", "s": "$score"}, "n": {"$sum": 1}}}
    if everything:
        pipelines: list[list[dict[str, Any]]] = [[group]]
    else:
        size = server_profile().match_batch
        pipelines = [[{"$match": {field: {"$in": part}}}, group] for part in chunked(ids, size)]
    ratings = Rating.get_motor_collection()
    for pipeline in pipelines:
        async for row in ratings.aggregate(pipeline, allowDiskUse=True):
            key = row["_id"]["k"]
            if key in counts:
                counts[key][bucket(row["_id"]["s"])] = row["n"]
    return counts


async def _versions(target: Target, ids: list[ObjectId]) -> dict[ObjectId, Any]:
    """The stored summary version of each id that exists."""
    collection = target.document.get_motor_collection()
    version = f"{target.summary_field}.version"
    found: dict[ObjectId, Any] = {}
    for part in chunked(ids):
        async for doc in collection.find({"_id": {"$in": part}}, {version: 1}):
            found[doc["_id"]] = (doc.get(target.summary_field) or {}).get("version")
    return found


async def recompute(
    target: Target,
    ids: Iterable[ObjectId],
    *,
    prior_votes: float | None = None,
    everything: bool = False,
    pace: Pace | None = None,
) -> Recomputed:
    """Recompute and store the summaries of `ids`, each over the version it read first
    (movies with their weighted score when `prior_votes` is given, from the C published
    after those versions were read); with `pace`, in small writes with rests between them."""
    result = Recomputed()
    write_batch = PACED_WRITE_BATCH if pace else server_profile().write_batch
    remaining = sorted(set(ids))
    collection = target.document.get_motor_collection()
    version_field = f"{target.summary_field}.version"
    for _ in range(CAS_ATTEMPTS):
        if not remaining:
            return result
        versions = await _versions(target, remaining)
        # C after the versions: a rewrite for a newer C then either has not reached a movie
        # yet (and will rewrite what is stored here) or changed its version (a lost race).
        extra = None if prior_votes is None else with_weighted(prior_votes, await published_mean())
        result.missing.extend(i for i in remaining if i not in versions)
        counts = await histograms(target.rating_field, list(versions), everything=everything)
        now = utcnow()
        mine: dict[ObjectId, ObjectId] = {}
        writes = []
        for object_id, histogram in counts.items():
            mine[object_id] = ObjectId()
            summary = RatingStats.from_histogram(
                histogram, version=mine[object_id], updated_at=now
            ).model_dump()
            if extra is not None:
                summary = extra(summary)
            writes.append(
                UpdateOne(
                    {"_id": object_id, version_field: versions[object_id]},
                    {"$set": {target.summary_field: summary}},
                )
            )
        matched = sent = 0
        for part in chunked(writes, write_batch):
            matched += (await collection.bulk_write(part, ordered=False)).matched_count
            sent += len(part)
            if pace is not None:
                await pace.rest()
                if await pace.overtaken():
                    written = list(mine)[:sent]
                    after = await _versions(target, written)
                    raise Overtaken(result.stored + [i for i in written if after.get(i) == mine[i]])
        if matched == len(writes):
            result.stored.extend(mine)
            return result
        # Someone stored in between (or the document went): read again what did not land.
        after = await _versions(target, list(mine))
        result.stored.extend(i for i, v in mine.items() if after.get(i) == v)
        result.missing.extend(i for i in mine if i not in after)
        remaining = [i for i, v in mine.items() if i in after and after[i] != v]
    raise RuntimeError(f"{len(remaining)} summaries lost {CAS_ATTEMPTS} races in a row")


async def published_mean() -> float | None:
    """The catalogue-wide mean C weighted scores are computed with (stored once, published)."""
    stored = await GlobalRatingStats.get("ratings")
    if stored is not None:
        return stored.mean
    return (await _publish(await _current_mean())).mean


async def _current_mean() -> tuple[float, int]:
    """C from the movies' exact summaries (far smaller than the ratings)."""
    pipeline = [
        {"$group": {"_id": None, "sum": {"$sum": "$rating.sum"}, "n": {"$sum": "$rating.count"}}}
    ]
    rows = await Movie.get_motor_collection().aggregate(pipeline).to_list(1)
    return (rows[0]["sum"], rows[0]["n"]) if rows else (0.0, 0)


async def _publish(totals: tuple[float, int]) -> GlobalRatingStats:
    total, count = totals
    stats = GlobalRatingStats(mean=total / count if count else None, votes=count)
    await GlobalRatingStats.get_motor_collection().replace_one(
        {"_id": "ratings"}, stats.model_dump(by_alias=True), upsert=True
    )
    return stats


def with_weighted(prior_votes: float, prior_mean: float | None) -> SummaryExtra:
    """Adds the weighted score to a movie's summary, and the C it was weighted with."""

    def extra(summary: dict[str, Any]) -> dict[str, Any]:
        summary["weighted"] = weighted_score(
            count=summary["count"],
            mean=summary["mean"],
            prior_votes=prior_votes,
            prior_mean=prior_mean,
        )
        summary["prior_mean"] = prior_mean
        return summary

    return extra


async def recompute_movies(
    ids: Iterable[ObjectId],
    *,
    prior_votes: float,
    everything: bool = False,
    pace: Pace | None = None,
) -> Recomputed:
    """Exact summaries (weighted with the published C) for these movies."""
    return await recompute(MOVIES, ids, prior_votes=prior_votes, everything=everything, pace=pace)


async def recompute_users(
    ids: Iterable[ObjectId], *, everything: bool = False, pace: Pace | None = None
) -> Recomputed:
    """Exact rating stats for these users."""
    return await recompute(USERS, ids, everything=everything, pace=pace)


async def recompute_many(
    *, movie_ids: Iterable[ObjectId] = (), user_ids: Iterable[ObjectId] = (), prior_votes: float
) -> Recomputed:
    """Exact summaries for many movies and users at once (an import's last step); the
    ratings of movies or users found missing are purged and their other side recomputed."""
    done = Recomputed()
    for target, ids in ((MOVIES, set(movie_ids)), (USERS, set(user_ids))):
        if not ids:
            continue
        total = await target.document.get_motor_collection().estimated_document_count()
        everything = len(ids) * 5 >= total
        if target is MOVIES:
            part = await recompute_movies(ids, prior_votes=prior_votes, everything=everything)
        else:
            part = await recompute_users(ids, everything=everything)
        done.stored += part.stored
        done.missing += part.missing
    if done.missing:
        await heal_orphans(done.missing, prior_votes=prior_votes)
    return done


async def import_writing() -> bool:
    """Whether an import is writing, or left intents no one has recomputed yet: the movies'
    summaries then lag their ratings, and no C may be published from them."""
    if await _import_leased():
        return True
    pending = {"job_id": {"$ne": None}}
    return await SummaryIntent.get_motor_collection().find_one(pending, {"_id": 1}) is not None


async def _import_leased() -> bool:
    """Whether an import holds its lease (it is writing, or finishing)."""
    found = await Lease.get_motor_collection().find_one(
        {"_id": IMPORT_LEASE, "expires_at": {"$gt": utcnow()}}, {"_id": 1}
    )
    return found is not None


async def drain_lag() -> float:
    """How far the summaries lag the rating writes: the age, on the server's clock, of the
    oldest write no drain has taken (0 when there is none)."""
    oldest = await Rating.get_motor_collection().find_one(
        {CHANGED_AT: {"$gte": await drained_before()}}, {CHANGED_AT: 1}, sort=[(CHANGED_AT, 1)]
    )
    if oldest is None:
        return 0.0
    stamped = oldest[CHANGED_AT]
    stamped = stamped if stamped.tzinfo else stamped.replace(tzinfo=UTC)
    return max(0.0, (await server_now() - stamped).total_seconds())


async def refresh_weighted_scores(
    *,
    prior_votes: float,
    tolerance: float,
    changed: Changed | None = None,
    pause: float = 0.0,
    max_lag: float | None = None,
) -> int:
    """Publish a new C only when it moved more than `tolerance` stars from the published one
    (and no import is writing, and the summaries lag the writes by at most `max_lag`
    seconds: C is taken from them), then rewrite the weighted scores in small batches (each
    its own short update, followed by `changed(ids)`). Any rated movie still weighted with
    another C is rewritten too. Returns how many movies were rewritten."""
    if await import_writing():
        return 0
    if max_lag is not None and await drain_lag() > max_lag:
        return 0
    stored = await GlobalRatingStats.get("ratings")
    totals = await _current_mean()
    mean = totals[0] / totals[1] if totals[1] else None
    if stored is not None and (
        mean == stored.mean
        or (mean is not None and stored.mean is not None and abs(mean - stored.mean) <= tolerance)
    ):
        behind = await _weighted_with_other_mean(stored.mean)
        if not behind:
            return 0
        log.warning("movies weighted with another C", extra={"movies": len(behind)})
        return await _rewrite_weighted(
            stored, prior_votes=prior_votes, changed=changed, pause=pause, only=behind
        )
    stats = await _publish(totals)
    return await _rewrite_weighted(stats, prior_votes=prior_votes, changed=changed, pause=pause)


async def _weighted_with_other_mean(mean: float | None) -> list[ObjectId]:
    """Rated movies whose weighted score was computed with a C other than `mean`."""
    cursor = Movie.get_motor_collection().find(
        {"rating.count": {"$gt": 0}}, {"_id": 1, "rating.prior_mean": 1}
    )
    return [
        doc["_id"]
        async for doc in cursor
        if not _same(doc["rating"].get("prior_mean", "unset"), mean)
    ]


async def _rewrite_weighted(
    stats: GlobalRatingStats,
    *,
    prior_votes: float,
    changed: Changed | None = None,
    pause: float = 0.0,
    skip: set[ObjectId] | None = None,
    only: list[ObjectId] | None = None,
) -> int:
    """Every movie's weighted score (but `skip`'s; or `only` these) from the published C, in
    batches, each movie's from its own count and mean at the moment of the write and under
    a new summary version, so a recomputation that read the old C loses its race."""
    count, avg, m = "$rating.count", "$rating.mean", prior_votes
    if stats.mean is None or m == 0:
        weighted: Any = avg
    else:
        weighted = {
            "$cond": [
                {"$gt": [count, 0]},
                {
                    "$add": [
                        {"$multiply": [{"$divide": [count, {"$add": [count, m]}]}, avg]},
                        {"$multiply": [{"$divide": [m, {"$add": [count, m]}]}, stats.mean]},
                    ]
                },
                None,
            ]
        }
    collection = Movie.get_motor_collection()
    if only is None:
        # Every movie, listed after C was published: one stored later is recomputed with
        # this C already, since its recomputation reads C after the movie exists.
        movies = [d["_id"] async for d in collection.find({}, {"_id": 1})]
        only = [i for i in movies if not skip or i not in skip]
    for part in chunked(only):
        # By _id alone: a second condition here lets SecantusDB pick a worse index.
        await collection.update_many(
            {"_id": {"$in": part}},
            [
                {
                    "$set": {
                        "rating.weighted": weighted,
                        "rating.prior_mean": stats.mean,
                        "rating.version": ObjectId(),
                    }
                }
            ],
        )
        if changed is not None:
            await changed(part)
        if pause:
            await asyncio.sleep(pause)  # let the API's queries in between batches
    log.info(
        "weighted scores refreshed",
        extra={"global_mean": stats.mean, "votes": stats.votes, "movies": len(only)},
    )
    return len(only)


async def record_intent(
    *, movie_ids: Iterable[ObjectId] = (), user_ids: Iterable[ObjectId] = (), job_id: Any = None
) -> ObjectId:
    """Durably note that these summaries must be recomputed (before the write that needs it);
    returns the intent's id."""
    result = await SummaryIntent.get_motor_collection().insert_one(
        {
            "movie_ids": list(movie_ids),
            "user_ids": list(user_ids),
            "job_id": job_id,
            "created_at": utcnow(),
        }
    )
    return result.inserted_id


async def withdraw_intent(intent_id: ObjectId) -> None:
    """Drop an intent whose write turned out to change nothing (a 404)."""
    await SummaryIntent.get_motor_collection().delete_one({"_id": intent_id})


async def finish_import(*, job_id: ObjectId, prior_votes: float, settle: float = 1.0) -> None:
    """Recompute everything an import's batches (this attempt and any earlier) recorded,
    clear those intents, then publish the new C with every weighted score. The rating
    writes no drain has taken yet are recomputed with it (the mark moves past them), then
    those that landed meanwhile, in at most CATCH_UP_PASSES shorter passes: live ratings
    during an import are current when it ends, not a backlog the drains start on then."""
    intents = SummaryIntent.get_motor_collection()
    notes = await intents.find({"job_id": job_id}).to_list(None)
    if not notes:
        return  # nothing was written
    # C first, from the ratings themselves, so the summaries below carry their final weights
    # and only the movies this import did not touch need a second write.
    before = await GlobalRatingStats.get("ratings")
    rows = await (
        Rating.get_motor_collection()
        .aggregate([{"$group": {"_id": None, "sum": {"$sum": "$score"}, "n": {"$sum": 1}}}])
        .to_list(1)
    )
    stats = await _publish((rows[0]["sum"], rows[0]["n"]) if rows else (0.0, 0))
    movies = {m for n in notes for m in n["movie_ids"]}
    done, _ = await _with_backlog(
        movies=movies,
        users={u for n in notes for u in n["user_ids"]},
        prior_votes=prior_votes,
        settle=settle,
    )
    for part in chunked([n["_id"] for n in notes]):
        await intents.delete_many({"_id": {"$in": part}})
    if done.missing:
        # Ratings of movies or users that are gone were purged: C from what is left, and
        # every movie weighted with it.
        stats = await _publish(await _current_mean())
        await _rewrite_weighted(stats, prior_votes=prior_votes)
    elif before is None or before.mean != stats.mean:
        await _rewrite_weighted(stats, prior_votes=prior_votes, skip=movies)
    for _ in range(CATCH_UP_PASSES):
        _, taken = await _with_backlog(prior_votes=prior_votes, settle=settle)
        if not taken:
            break


async def _with_backlog(
    *,
    movies: Iterable[ObjectId] = (),
    users: Iterable[ObjectId] = (),
    prior_votes: float,
    settle: float,
) -> tuple[Recomputed, int]:
    """Recompute these summaries and those the rating writes no drain has taken name (to
    `settle` seconds ago), then move the drain's mark past those writes; with their count."""
    horizon = await server_now() - timedelta(seconds=settle)
    backlog, _ = await _oldest_writes(await drained_before(), horizon, batch=None)
    done = await recompute_many(
        movie_ids=set(movies) | backlog.movies,
        user_ids=set(users) | backlog.users,
        prior_votes=prior_votes,
    )
    if backlog.count:
        await _move_mark(horizon)
    return done, backlog.count


async def purge_ratings(movie_ids: list[ObjectId]) -> None:
    """Delete the ratings of deleted movies, their raters' recompute noted first."""
    await _purge(MOVIES, movie_ids)


async def purge_user_ratings(user_ids: list[ObjectId]) -> None:
    """Delete the ratings of deleted users, their movies' recompute noted first."""
    await _purge(USERS, user_ids)


async def _purge(gone: Target, ids: Iterable[ObjectId]) -> set[ObjectId]:
    """Delete the ratings that name these missing movies (or users), the other side's
    recompute noted first; returns that other side's ids."""
    ratings = Rating.get_motor_collection()
    other = "user_id" if gone is MOVIES else "movie_id"
    touched: set[ObjectId] = set()
    for object_id in ids:
        named = await ratings.distinct(other, {gone.rating_field: object_id})
        if named:
            side = {"user_ids": named} if gone is MOVIES else {"movie_ids": named}
            await record_intent(**side)
            await ratings.delete_many({gone.rating_field: object_id})
            touched.update(named)
    return touched


async def heal_orphans(ids: Iterable[ObjectId], *, prior_votes: float) -> list[ObjectId]:
    """Purge the ratings naming ids that are neither a movie nor a user any more and
    recompute the other side now; returns the ids purged."""
    ids = list(ids)
    movies, users = await _missing(MOVIES, ids), await _missing(USERS, ids)
    if movies:
        await recompute_users(await _purge(MOVIES, movies))
    if users:
        await recompute_movies(await _purge(USERS, users), prior_votes=prior_votes)
    return movies + users


async def _missing(target: Target, ids: list[ObjectId]) -> list[ObjectId]:
    """Those of `ids` that rating documents name on `target`'s side but that do not exist."""
    ratings = Rating.get_motor_collection()
    named = [i for i in ids if await ratings.find_one({target.rating_field: i}, {"_id": 1})]
    existing = set(await _versions(target, named))
    return [i for i in named if i not in existing]


@dataclass
class Orphans:
    """Ratings that name a movie or a user that does not exist."""

    movies: list[ObjectId] = field(default_factory=list)  # missing movies still rated
    users: list[ObjectId] = field(default_factory=list)  # missing users who still rate
    ratings: int = 0

    @property
    def ids(self) -> list[ObjectId]:
        return self.movies + self.users


async def orphans() -> Orphans:
    """Referential integrity of the ratings: every movie and user they name must exist."""
    found = Orphans()
    ratings = Rating.get_motor_collection()
    for target, into in ((MOVIES, found.movies), (USERS, found.users)):
        named = await ratings.distinct(target.rating_field)
        existing = set(await _versions(target, named))
        into.extend(i for i in named if i not in existing)
        for part in chunked(into):
            found.ratings += await ratings.count_documents({target.rating_field: {"$in": part}})
    return found


async def _running_imports(tags: set[ObjectId]) -> set[ObjectId]:
    """Those of the import tags whose import still runs: a job not yet ended, or (an import
    run from the command line has no job) a tag that wrote an intent in the last
    IMPORT_TAG_QUIET seconds."""
    if not tags:
        return set()
    cursor = ImportJob.get_motor_collection().find(
        {"_id": {"$in": list(tags)}}, {"_id": 1, "status": 1}
    )
    jobs = {doc["_id"]: doc["status"] async for doc in cursor}
    running = {tag for tag, status in jobs.items() if status not in FINISHED}
    loose = [tag for tag in tags if tag not in jobs]
    if loose:
        recent = {"job_id": {"$in": loose}, "created_at": {"$gt": utcnow() - IMPORT_TAG_QUIET}}
        running |= set(await SummaryIntent.get_motor_collection().distinct("job_id", recent))
    return running


async def _move_mark(until: datetime) -> None:
    """Every rating write stamped before `until` is in the summaries. $max: a slower drain
    (or an import's last step) that started earlier never moves the mark back."""
    await DrainMark.get_motor_collection().update_one(
        {"_id": "ratings"}, {"$max": {"drained_before": until}}, upsert=True
    )


async def server_now() -> datetime:
    """The database server's clock, the one `$currentDate` stamps writes with."""
    hello = await Rating.get_motor_collection().database.command("hello")
    now: datetime = hello["localTime"]
    return now if now.tzinfo else now.replace(tzinfo=UTC)


async def drained_before() -> datetime:
    """The drain's mark: every rating write stamped before it is in the summaries."""
    mark = await DrainMark.get_motor_collection().find_one({"_id": "ratings"})
    return mark["drained_before"].replace(tzinfo=UTC) if mark else EPOCH


async def undrained() -> int:
    """Rating writes at or past the mark plus intent documents: what drains have yet to take
    (0 once the summaries reflect every write)."""
    since = await drained_before()
    ratings = await Rating.get_motor_collection().count_documents({CHANGED_AT: {"$gte": since}})
    return ratings + await SummaryIntent.get_motor_collection().count_documents({})


LEGACY_INDEX = "pending_summaries"


async def adopt_legacy_stamps() -> int:
    """Ratings stamped by the earlier scheme (`pending`, cleared one by one) join the new
    one: they get `changed_at` now, and the old index goes. Returns how many there were."""
    ratings = Rating.get_motor_collection()
    if LEGACY_INDEX not in await ratings.index_information():
        return 0
    moved = await ratings.update_many(
        {"pending": {"$exists": True}}, {"$unset": {"pending": ""}, **MARK_CHANGED}
    )
    await ratings.drop_index(LEGACY_INDEX)
    return moved.modified_count


@dataclass
class Writes:
    """Rating writes a drain round takes: the movies and users they name, and how many."""

    movies: set[ObjectId] = field(default_factory=set)
    users: set[ObjectId] = field(default_factory=set)
    count: int = 0

    def add(self, write: dict[str, Any]) -> None:
        self.movies.add(write["movie_id"])
        self.users.add(write["user_id"])
        self.count += 1

    def fits(self, more: Writes, *, summaries: int, scanned: int) -> bool:
        """Whether `more` can join without passing either bound (anything joins nothing)."""
        if not self.count:
            return True
        named = len(self.movies | more.movies) + len(self.users | more.users)
        return named <= summaries and self.count + more.count <= scanned

    def absorb(self, more: Writes) -> None:
        self.movies |= more.movies
        self.users |= more.users
        self.count += more.count


async def _oldest_writes(
    since: datetime, until: datetime, batch: int | None
) -> tuple[Writes, datetime]:
    """The rating writes stamped in [since, until), oldest first, as many as name at most
    `batch` movies and users together (a backlog of writes to the same movies is one round)
    in at most WRITES_PER_SUMMARY times `batch` writes (None: all); with the end of what was
    taken.
    Writes of one instant are never split between rounds. A range walk of the sparse index
    read as a stream: a round holds ids, not writes, and its cost is bounded however large
    the backlog."""
    fields = {"movie_id": 1, "user_id": 1, CHANGED_AT: 1, "_id": 0}
    cursor = (
        Rating.get_motor_collection()
        .find({CHANGED_AT: {"$gte": since, "$lt": until}}, fields)
        .sort(CHANGED_AT, 1)
        .batch_size(1000)
    )
    most = batch if batch is not None else 2**62
    bounds = {"summaries": most, "scanned": most * WRITES_PER_SUMMARY}
    taken, instant, at = Writes(), Writes(), until  # `instant`: read, not yet taken, of `at`
    try:
        async for write in cursor:
            if instant.count and write[CHANGED_AT] != at:
                if not taken.fits(instant, **bounds):
                    return taken, at
                taken.absorb(instant)
                instant = Writes()
            at = write[CHANGED_AT]
            instant.add(write)
    finally:
        await cursor.close()
    if not taken.fits(instant, **bounds):
        return taken, at
    taken.absorb(instant)
    return taken, until


async def drain_once(
    *, prior_votes: float, batch: int, settle: float, pace: Pace | None = None
) -> DrainReport:
    """One round: take the oldest rating writes from the mark to `settle` seconds ago that
    name ≤ batch movies and users, and ≤ batch intents, recompute what they name (writing
    at `pace`), then move the mark past the writes taken and delete those intents."""
    report = DrainReport(rounds=1)
    ratings = Rating.get_motor_collection()
    intents = SummaryIntent.get_motor_collection()
    since = await drained_before()
    horizon = until = await server_now() - timedelta(seconds=settle)
    movies: set[ObjectId] = set()
    users: set[ObjectId] = set()
    if since < until:
        writes, until = await _oldest_writes(since, horizon, batch)
        report.more = until < horizon
        movies |= writes.movies
        users |= writes.users
        report.taken += writes.count
    report.waiting = (
        not report.more
        and (await ratings.find_one({CHANGED_AT: {"$gte": max(since, until)}}, {"_id": 1}))
        is not None
    )
    notes = await intents.find({"job_id": None}).to_list(batch)
    # An import's intents wait for their job to end (it recomputes and clears them itself),
    # unless it ended without doing so (failed, cancelled, a CLI run that crashed).
    tags = set(await intents.distinct("job_id", {"job_id": {"$ne": None}}))
    if ended := sorted(tags - await _running_imports(tags)):
        notes += await intents.find({"job_id": {"$in": ended}}).to_list(batch)
    movies |= {m for n in notes for m in n["movie_ids"]}
    users |= {u for n in notes for u in n["user_ids"]}
    if not movies and not users and not notes:
        return report

    if pace is not None:

        async def overtaken() -> bool:
            return await drained_before() >= until

        pace.overtaken = overtaken if report.taken else _never
    try:
        done = await recompute_movies(movies, prior_votes=prior_votes, pace=pace)
    except Overtaken as stopped:
        # The writes were recomputed after this round read them (an import's last step took
        # them over): the rest of the round is work done; its intents wait for the next.
        report.movies = stopped.stored
        return report
    report.movies = done.stored
    if done.missing:
        # Deleted movies (the API purges at once; this finishes a purge a crash cut short, or
        # a rating created as its movie went): their ratings go, their raters are noted.
        await purge_ratings(done.missing)
        report.purged_movies = done.missing
    try:
        done_users = await recompute_users(users, pace=pace)
    except Overtaken as stopped:
        report.users = stopped.stored
        return report
    report.users = done_users.stored
    if done_users.missing:
        await _purge(USERS, done_users.missing)  # deleted accounts: their ratings go too

    # Everything read above is now reflected.
    if report.taken:
        await _move_mark(until)
    for ids in chunked([n["_id"] for n in notes]):
        report.taken += (await intents.delete_many({"_id": {"$in": ids}})).deleted_count
    return report


async def drain(
    *,
    prior_votes: float,
    batch: int,
    duty: float,
    settle: float,
    budget: float = 20.0,
    changed: SummariesChanged | None = None,
    keep_going: Callable[[], bool] | None = None,
    others_busy: Callable[[], Awaitable[bool]] | None = None,
) -> DrainReport:
    """Drain rounds until nothing is pending or `budget` seconds are spent (the next drain,
    queued by a write or by beat, takes the rest), busy at most `duty` of the time while
    `others_busy` says the API is serving people (always, without it); `changed` hears each
    round's ids, and `keep_going` is asked after every round (False: the worker lost its
    drain lock, another drain may run)."""
    total = DrainReport()
    deadline = time.monotonic() + budget
    # Rests come inside rounds too (between their summary writes) and after each round:
    # under a steady write load drains leave the rest of a database that runs one command
    # at a time to the API, and each round batches more writes.
    pace = Pace(duty, others_busy=others_busy)
    await adopt_legacy_stamps()
    while True:
        # While an import writes, the database is shared with it and a round takes many times
        # longer, and the import's last step recomputes the writes no round took yet: large
        # rounds then only delay the live ratings that small ones would show sooner.
        size = max(1, batch // IMPORT_ROUND_SHARE) if await _import_leased() else batch
        started = time.monotonic()
        report = await drain_once(prior_votes=prior_votes, batch=size, settle=settle, pace=pace)
        log.debug(
            "drain round",
            extra={
                "batch": size,
                "taken": report.taken,
                "movies": len(report.movies),
                "users": len(report.users),
                "seconds": round(time.monotonic() - started, 2),
            },
        )
        if report.empty and not report.waiting and not report.more:
            return total
        total.rounds += report.rounds
        total.movies += report.movies
        total.users += report.users
        total.purged_movies += report.purged_movies
        total.taken += report.taken
        if changed is not None and not report.empty:
            await changed(report.movies + report.purged_movies, report.users)
        if keep_going is not None and not keep_going():
            return total
        # Writes too recent to take are ripe once `settle` has passed.
        await pace.rest(at_least=settle / 2 if report.waiting else 0.0)
        if time.monotonic() >= deadline:
            return total


@dataclass
class Difference:
    """One stored summary that is not what its ratings give."""

    kind: str
    id: str
    stored: dict[str, Any]
    expected: dict[str, Any]


_COMPARED = ("count", "sum", "mean", "histogram")


async def verify(
    target: Target,
    *,
    prior_votes: float,
    batch: int = 500,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, list[Difference]]:
    """Compare every stored summary of `target` with a recomputation from the ratings
    (server-side $group per batch); returns (documents checked, differences)."""
    collection = target.document.get_motor_collection()
    mean = await published_mean() if target is MOVIES else None
    differences: list[Difference] = []
    checked = 0
    projection = {target.summary_field: 1}
    cursor = collection.find({}, projection, batch_size=batch)
    while docs := await cursor.to_list(batch):
        counts = await histograms(target.rating_field, [d["_id"] for d in docs])
        for doc in docs:
            stored = doc.get(target.summary_field) or {}
            expected = RatingStats.from_histogram(counts[doc["_id"]]).model_dump()
            keys: tuple[str, ...] = _COMPARED
            if target is MOVIES:
                expected = with_weighted(prior_votes, mean)(expected)
                keys = (*_COMPARED, "weighted")
                if expected["count"]:
                    keys = (*keys, "prior_mean")
            if any(not _same(stored.get(k), expected[k]) for k in keys):
                differences.append(
                    Difference(
                        kind=target.summary_field,
                        id=str(doc["_id"]),
                        stored={k: stored.get(k) for k in keys},
                        expected={k: expected[k] for k in keys},
                    )
                )
        checked += len(docs)
        if progress is not None:
            progress(len(docs))
    return checked, differences


def _same(stored: Any, expected: Any) -> bool:
    if isinstance(stored, int | float) and isinstance(expected, int | float):
        return abs(stored - expected) <= 1e-9 * max(1.0, abs(expected))
    return bool(stored == expected)


def ids_of(differences: Iterable[Difference]) -> list[PydanticObjectId]:
    return [PydanticObjectId(d.id) for d in differences]
