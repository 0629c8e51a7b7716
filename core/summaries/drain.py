"""Drain rounds: take the rating writes stamped since the mark and the intents, recompute
what they name, then move the mark past them and delete those intents; and an import's last
step, which recomputes everything it wrote with the backlog that built up meanwhile."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from core.store import imports as import_store
from core.store import summaries as summary_store
from core.store.summaries import MOVIES, USERS
from core.summaries.global_mean import import_leased, publish, rewrite_weighted
from core.summaries.intents import heal_orphans, purge, purge_ratings
from core.summaries.pace import Pace, never
from core.summaries.recompute import Overtaken, Recomputed, recompute_movies, recompute_users
from models import utcnow

log = logging.getLogger(__name__)
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
# A drain spends at most this long before leaving the rest to the next one (queued by a
# write or by beat): a worker is never held by one drain.
DRAIN_BUDGET = 20.0
SummariesChanged = Callable[[list[Any], list[Any]], Awaitable[None]]


@dataclass
class DrainReport:
    """What a drain did: summaries stored, deleted movies purged, intents cleared."""

    movies: list[Any] = field(default_factory=list)
    users: list[Any] = field(default_factory=list)
    purged_movies: list[Any] = field(default_factory=list)
    taken: int = 0
    rounds: int = 0
    waiting: bool = False  # writes too recent for this round: the next one takes them
    more: bool = False  # ripe writes beyond this round's batch: the next round takes them

    @property
    def empty(self) -> bool:
        return not (self.movies or self.users or self.purged_movies or self.taken)


@dataclass
class Writes:
    """Rating writes a drain round takes: the movies and users they name, and how many."""

    movies: set[Any] = field(default_factory=set)
    users: set[Any] = field(default_factory=set)
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


async def oldest_writes(
    since: datetime, until: datetime, batch: int | None
) -> tuple[Writes, datetime]:
    """The rating writes stamped in [since, until), oldest first, as many as name at most
    `batch` movies and users together (a backlog of writes to the same movies is one round)
    in at most WRITES_PER_SUMMARY times `batch` writes (None: all); with the end of what was
    taken. Writes of one instant are never split between rounds; a round holds ids, not
    writes, so its cost is bounded however large the backlog."""
    most = batch if batch is not None else 2**62
    bounds = {"summaries": most, "scanned": most * WRITES_PER_SUMMARY}
    taken, instant, at = Writes(), Writes(), until  # `instant`: read, not yet taken, of `at`
    async for write in summary_store.stamped_writes(since, until):
        if instant.count and write["changed_at"] != at:
            if not taken.fits(instant, **bounds):
                return taken, at
            taken.absorb(instant)
            instant = Writes()
        at = write["changed_at"]
        instant.add(write)
    if not taken.fits(instant, **bounds):
        return taken, at
    taken.absorb(instant)
    return taken, until


async def _running_imports(tags: set[Any]) -> set[Any]:
    """Those of the import tags whose import still runs: a job not yet ended, or (an import
    run from the command line has no job) a tag that wrote an intent in the last
    IMPORT_TAG_QUIET seconds."""
    if not tags:
        return set()
    jobs = await import_store.statuses(list(tags))
    running = {tag for tag, finished in jobs.items() if not finished}
    loose = [tag for tag in tags if tag not in jobs]
    if loose:
        running |= await summary_store.import_tags(among=loose, since=utcnow() - IMPORT_TAG_QUIET)
    return running


async def drain_once(
    *, prior_votes: float, batch: int, settle: float, pace: Pace | None = None
) -> DrainReport:
    """One round: take the oldest rating writes from the mark to `settle` seconds ago that
    name ≤ batch movies and users, and ≤ batch intents, recompute what they name (writing
    at `pace`), then move the mark past the writes taken and delete those intents."""
    report = DrainReport(rounds=1)
    since = await summary_store.drained_before()
    horizon = until = await summary_store.server_now() - timedelta(seconds=settle)
    movies: set[Any] = set()
    users: set[Any] = set()
    if since < until:
        writes, until = await oldest_writes(since, horizon, batch)
        report.more = until < horizon
        movies |= writes.movies
        users |= writes.users
        report.taken += writes.count
    report.waiting = (
        not report.more and await summary_store.oldest_stamp(max(since, until)) is not None
    )
    notes = await summary_store.intents(limit=batch)
    # An import's intents wait for their job to end (it recomputes and clears them itself),
    # unless it ended without doing so (failed, cancelled, a CLI run that crashed).
    tags = await summary_store.import_tags()
    if ended := sorted(tags - await _running_imports(tags)):
        notes += await summary_store.intents(job_ids=ended, limit=batch)
    movies |= {m for n in notes for m in n.movie_ids}
    users |= {u for n in notes for u in n.user_ids}
    if not movies and not users and not notes:
        return report

    if pace is not None:

        async def overtaken() -> bool:
            return await summary_store.drained_before() >= until

        pace.overtaken = overtaken if report.taken else never
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
        await purge(USERS, done_users.missing)  # deleted accounts: their ratings go too

    # Everything read above is now reflected.
    if report.taken:
        await summary_store.move_mark(until)
    report.taken += await summary_store.delete_intents([n.id for n in notes])
    return report


async def drain(
    *,
    prior_votes: float,
    batch: int,
    duty: float,
    settle: float,
    budget: float = DRAIN_BUDGET,
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
    while True:
        # While an import writes, the database is shared with it and a round takes many times
        # longer, and the import's last step recomputes the writes no round took yet: large
        # rounds then only delay the live ratings that small ones would show sooner.
        size = max(1, batch // IMPORT_ROUND_SHARE) if await import_leased() else batch
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


async def recompute_many(
    *, movie_ids: Iterable[Any] = (), user_ids: Iterable[Any] = (), prior_votes: float
) -> Recomputed:
    """Exact summaries for many movies and users at once (an import's last step); the
    ratings of movies or users found missing are purged and their other side recomputed."""
    done = Recomputed()
    for target, ids in ((MOVIES, set(movie_ids)), (USERS, set(user_ids))):
        if not ids:
            continue
        # Most of a collection: one pass over every rating beats index walks per id.
        everything = len(ids) * 5 >= await summary_store.count(target)
        if target is MOVIES:
            part = await recompute_movies(ids, prior_votes=prior_votes, everything=everything)
        else:
            part = await recompute_users(ids, everything=everything)
        done.stored += part.stored
        done.missing += part.missing
    if done.missing:
        await heal_orphans(done.missing, prior_votes=prior_votes)
    return done


class Phases(Protocol):
    """Where a long step reports how far it got (an import's progress items)."""

    async def started(self, name: str, total: int) -> None: ...

    async def advanced(self, name: str, done: int) -> None: ...


async def finish_import(
    *, job_id: Any, prior_votes: float, settle: float, phases: Phases | None = None
) -> None:
    """Recompute everything an import's batches (this attempt and any earlier) recorded,
    clear those intents, then publish the new C with every weighted score. The rating
    writes no drain has taken yet are recomputed with it (the mark moves past them), then
    those that landed meanwhile, in at most CATCH_UP_PASSES shorter passes: live ratings
    during an import are current when it ends, not a backlog the drains start on then."""
    notes = await summary_store.intents(job_ids=[job_id])
    if not notes:
        return  # nothing was written
    # C first, from the ratings themselves, so the summaries below carry their final weights
    # and only the movies this import did not touch need a second write.
    before = await summary_store.published()
    stats = await publish(await summary_store.totals_of_ratings())
    movies = {m for n in notes for m in n.movie_ids}
    users = {u for n in notes for u in n.user_ids}
    if phases is not None:
        await phases.started("summaries", len(movies) + len(users))
    done, _ = await _with_backlog(
        movies=movies, users=users, prior_votes=prior_votes, settle=settle
    )
    if phases is not None:
        await phases.advanced("summaries", len(movies) + len(users))
    await summary_store.delete_intents([n.id for n in notes])
    # Movies listed after C was published: one stored later is recomputed with it already.
    rewrite: list[Any] | None = None
    if done.missing:
        # Ratings of movies or users that are gone were purged: C from what is left, and
        # every movie weighted with it.
        stats = await publish(await summary_store.totals_of_summaries())
        rewrite = await summary_store.movie_ids()
    elif before is None or before.mean != stats.mean:
        rewrite = [i for i in await summary_store.movie_ids() if i not in movies]
    if rewrite is not None:
        changed = None
        if phases is not None:
            await phases.started("weighted scores", len(rewrite))

            async def changed(part: list[Any]) -> None:
                await phases.advanced("weighted scores", len(part))

        await rewrite_weighted(stats, prior_votes=prior_votes, only=rewrite, changed=changed)
    for _ in range(CATCH_UP_PASSES):
        _, taken = await _with_backlog(prior_votes=prior_votes, settle=settle)
        if not taken:
            break


async def _with_backlog(
    *,
    movies: Iterable[Any] = (),
    users: Iterable[Any] = (),
    prior_votes: float,
    settle: float,
) -> tuple[Recomputed, int]:
    """Recompute these summaries and those the rating writes no drain has taken name (to
    `settle` seconds ago), then move the drain's mark past those writes; with their count."""
    horizon = await summary_store.server_now() - timedelta(seconds=settle)
    backlog, _ = await oldest_writes(await summary_store.drained_before(), horizon, batch=None)
    done = await recompute_many(
        movie_ids=set(movies) | backlog.movies,
        user_ids=set(users) | backlog.users,
        prior_votes=prior_votes,
    )
    if backlog.count:
        await summary_store.move_mark(horizon)
    return done, backlog.count
