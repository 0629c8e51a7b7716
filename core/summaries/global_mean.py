"""The catalogue-wide mean C every weighted score is computed with: published only while no
import is writing and the summaries are current, and every movie rewritten when it moves."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from core.store import chunked
from core.store import summaries as summary_store
from core.store.leases import IMPORT_LEASE, is_held
from core.summaries.backlog import drain_lag
from models import GlobalRatingStats

log = logging.getLogger(__name__)
SummaryExtra = Callable[[dict[str, Any]], dict[str, Any]]
Changed = Callable[[list[Any]], Awaitable[None]]


def weighted_score(
    *, count: int, mean: float | None, prior_votes: float, prior_mean: float | None
) -> float | None:
    """Bayesian weighted score WR = v/(v+m)·R + m/(v+m)·C; None when nothing is rated."""
    if not count or mean is None:
        return None
    if prior_mean is None or prior_votes == 0:
        return mean
    return count / (count + prior_votes) * mean + prior_votes / (count + prior_votes) * prior_mean


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


def same(stored: Any, expected: Any) -> bool:
    """Equal, numbers within rounding."""
    if isinstance(stored, int | float) and isinstance(expected, int | float):
        return abs(stored - expected) <= 1e-9 * max(1.0, abs(expected))
    return bool(stored == expected)


async def publish(totals: tuple[float, int]) -> GlobalRatingStats:
    """Publish C from a sum and count of scores."""
    total, count = totals
    return await summary_store.publish(mean=total / count if count else None, votes=count)


async def published_mean() -> float | None:
    """The published C (published from the summaries first when there is none)."""
    stored = await summary_store.published()
    if stored is not None:
        return stored.mean
    return (await publish(await summary_store.totals_of_summaries())).mean


async def import_leased() -> bool:
    """Whether an import holds its lease (it is writing, or finishing)."""
    return await is_held(IMPORT_LEASE)


async def import_writing() -> bool:
    """Whether an import is writing, or left intents no one has recomputed yet: the movies'
    summaries then lag their ratings, and no C may be published from them."""
    return await import_leased() or await summary_store.any_import_intent()


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
    seconds: C is taken from them), then rewrite the weighted scores in
    small batches (each its own short update, followed by `changed(ids)`). Any rated movie
    still weighted with another C is rewritten too. Returns how many movies were rewritten."""
    if await import_writing():
        return 0
    if max_lag is not None and await drain_lag() > max_lag:
        return 0
    stored = await summary_store.published()
    totals = await summary_store.totals_of_summaries()
    mean = totals[0] / totals[1] if totals[1] else None
    if stored is not None and (
        mean == stored.mean
        or (mean is not None and stored.mean is not None and abs(mean - stored.mean) <= tolerance)
    ):
        behind = [i async for i, c in summary_store.weighted_with() if not same(c, stored.mean)]
        if not behind:
            return 0
        log.warning("movies weighted with another C", extra={"movies": len(behind)})
        return await rewrite_weighted(
            stored, prior_votes=prior_votes, changed=changed, pause=pause, only=behind
        )
    stats = await publish(totals)
    return await rewrite_weighted(stats, prior_votes=prior_votes, changed=changed, pause=pause)


async def rewrite_weighted(
    stats: GlobalRatingStats,
    *,
    prior_votes: float,
    changed: Changed | None = None,
    pause: float = 0.0,
    skip: set[Any] | None = None,
    only: list[Any] | None = None,
) -> int:
    """Every movie's weighted score (but `skip`'s; or `only` these) from the published C, in
    batches, each under a new summary version. Returns how many movies it rewrote."""
    if only is None:
        # Every movie, listed after C was published: one stored later is recomputed with
        # this C already, since its recomputation reads C after the movie exists.
        only = [i for i in await summary_store.movie_ids() if not skip or i not in skip]
    for part in chunked(only):
        await summary_store.rewrite_weighted(part, prior_votes=prior_votes, mean=stats.mean)
        if changed is not None:
            await changed(part)
        if pause:
            await asyncio.sleep(pause)  # let the API's queries in between batches
    log.info(
        "weighted scores refreshed",
        extra={"global_mean": stats.mean, "votes": stats.votes, "movies": len(only)},
    )
    return len(only)
