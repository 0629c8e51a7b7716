"""What the drains have yet to take, measured on the database server's clock."""

from __future__ import annotations

from core.store import summaries as summary_store


async def drain_lag() -> float:
    """How far the summaries lag the rating writes: the age, on the server's clock, of the
    oldest write no drain has taken (0 when there is none)."""
    oldest = await summary_store.oldest_stamp(await summary_store.drained_before())
    if oldest is None:
        return 0.0
    return max(0.0, (await summary_store.server_now() - oldest).total_seconds())


async def undrained() -> int:
    """Rating writes at or past the mark plus intent documents: what drains have yet to take
    (0 once the summaries reflect every write)."""
    since = await summary_store.drained_before()
    return await summary_store.count_stamped(since) + await summary_store.count_intents()
