"""Every stored summary compared with a recomputation from the ratings."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from core.store import summaries as summary_store
from core.store.summaries import MOVIES, Target
from core.summaries.global_mean import published_mean, same, with_weighted
from models import PydanticObjectId, RatingStats

_COMPARED = ("count", "sum", "mean", "histogram")
# Documents compared per server-side $group.
VERIFY_BATCH = 500


@dataclass
class Difference:
    """One stored summary that is not what its ratings give."""

    kind: str
    id: str
    stored: dict[str, Any]
    expected: dict[str, Any]


async def verify(
    target: Target,
    *,
    prior_votes: float,
    batch: int = VERIFY_BATCH,
    progress: Callable[[int], None] | None = None,
) -> tuple[int, list[Difference]]:
    """Compare every stored summary of `target` with a recomputation from the ratings;
    returns (documents checked, differences)."""
    mean = await published_mean() if target is MOVIES else None
    differences: list[Difference] = []
    checked = 0
    async for docs in summary_store.stored_summaries(target, batch=batch):
        counts = await summary_store.histograms(target, [d["_id"] for d in docs])
        for doc in docs:
            stored = doc.get(target.summary_field) or {}
            expected = RatingStats.from_histogram(counts[doc["_id"]]).model_dump()
            keys: tuple[str, ...] = _COMPARED
            if target is MOVIES:
                expected = with_weighted(prior_votes, mean)(expected)
                keys = (*_COMPARED, "weighted")
                if expected["count"]:
                    keys = (*keys, "prior_mean")
            if any(not same(stored.get(k), expected[k]) for k in keys):
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


def ids_of(differences: Iterable[Difference]) -> list[PydanticObjectId]:
    """The ids of the documents that differ."""
    return [PydanticObjectId(d.id) for d in differences]
