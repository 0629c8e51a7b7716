"""Exact summaries recomputed from the ratings and stored by compare-and-set: each over the
summary version it read first, so a summary read earlier never overwrites a later one."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.store import chunked, server_profile
from core.store import summaries as summary_store
from core.store.summaries import MOVIES, USERS, Target
from core.summaries.global_mean import published_mean, with_weighted
from core.summaries.pace import Pace
from models import PydanticObjectId, RatingStats, utcnow

# Rounds of read-compute-store before a summary that keeps losing its race is an error.
CAS_ATTEMPTS = 8


class Overtaken(Exception):
    """A paced recomputation stopped because its work was done by someone else."""

    def __init__(self, stored: list[Any]) -> None:
        super().__init__("overtaken")
        self.stored = stored  # what it stored before it stopped


@dataclass
class Recomputed:
    """What one recomputation stored, and which of the ids it was given do not exist."""

    stored: list[Any] = field(default_factory=list)
    missing: list[Any] = field(default_factory=list)


async def recompute(
    target: Target,
    ids: Iterable[Any],
    *,
    prior_votes: float | None = None,
    everything: bool = False,
    pace: Pace | None = None,
) -> Recomputed:
    """Recompute and store the summaries of `ids`, each over the version it read first
    (movies with their weighted score when `prior_votes` is given, from the C published
    after those versions were read); with `pace`, in small writes with rests between them."""
    result = Recomputed()
    profile = server_profile()
    write_batch = profile.paced_write_batch if pace else profile.write_batch
    remaining = sorted(set(ids))
    for _ in range(CAS_ATTEMPTS):
        if not remaining:
            return result
        versions = await summary_store.versions(target, remaining)
        # C after the versions: a rewrite for a newer C then either has not reached a movie
        # yet (and will rewrite what is stored here) or changed its version (a lost race).
        extra = None if prior_votes is None else with_weighted(prior_votes, await published_mean())
        result.missing.extend(i for i in remaining if i not in versions)
        counts = await summary_store.histograms(target, list(versions), everything=everything)
        now = utcnow()
        mine: dict[Any, PydanticObjectId] = {}
        writes = []
        for object_id, histogram in counts.items():
            mine[object_id] = PydanticObjectId()
            summary = RatingStats.from_histogram(
                histogram, version=mine[object_id], updated_at=now
            ).model_dump()
            if extra is not None:
                summary = extra(summary)
            writes.append((object_id, versions[object_id], summary))
        matched = sent = 0
        for part in chunked(writes, write_batch):
            matched += await summary_store.store_over(target, part)
            sent += len(part)
            if pace is not None:
                await pace.rest()
                if await pace.overtaken():
                    written = list(mine)[:sent]
                    after = await summary_store.versions(target, written)
                    raise Overtaken(result.stored + [i for i in written if after.get(i) == mine[i]])
        if matched == len(writes):
            result.stored.extend(mine)
            return result
        # Someone stored in between (or the document went): read again what did not land.
        after = await summary_store.versions(target, list(mine))
        result.stored.extend(i for i, v in mine.items() if after.get(i) == v)
        result.missing.extend(i for i in mine if i not in after)
        remaining = [i for i, v in mine.items() if i in after and after[i] != v]
    raise RuntimeError(f"{len(remaining)} summaries lost {CAS_ATTEMPTS} races in a row")


async def recompute_movies(
    ids: Iterable[Any],
    *,
    prior_votes: float,
    everything: bool = False,
    pace: Pace | None = None,
) -> Recomputed:
    """Exact summaries (weighted with the published C) for these movies."""
    return await recompute(MOVIES, ids, prior_votes=prior_votes, everything=everything, pace=pace)


async def recompute_users(
    ids: Iterable[Any], *, everything: bool = False, pace: Pace | None = None
) -> Recomputed:
    """Exact rating stats for these users."""
    return await recompute(USERS, ids, everything=everything, pace=pace)
