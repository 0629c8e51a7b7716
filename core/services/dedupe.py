"""One record per film, after the fact: find duplicate movies and merge each group into one.

Two records are the same film when they share an IMDb or TMDb id, or when they share the
normalised title and year and one of them has no external id at all (the rule the importer
matches by). Each group keeps the record with the most ratings (then the one with a
MovieLens id, then the oldest). The others' ratings move to the kept record (a user who
rated both keeps the newer rating), then each other record is deleted the way the API
deletes a movie, with a last pass for ratings written meanwhile. Intents are recorded
before every write, so a crash midway leaves the drain to finish the summaries and a rerun
to finish the merge; the run recomputes the summaries itself.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from core import summaries
from core.cache import Cache
from core.search import search_fields
from core.store import movies as movie_store
from core.store import ratings as rating_store
from models import PydanticObjectId

log = logging.getLogger(__name__)
ID_FIELDS = ("imdb", "tmdb", "movielens")


@dataclass
class Merge:
    """One duplicate folded into its kept record, and what happened to its ratings."""

    kept: dict[str, Any]
    merged: dict[str, Any]
    moved: int = 0  # the user had not rated the kept record
    replaced: int = 0  # the duplicate's rating was newer and took the kept one's place
    dropped: int = 0  # the kept record's rating was newer

    def describe(self, *, dry_run: bool) -> str:
        verb = "would merge" if dry_run else "merged"
        counts = (
            f"ratings: {self.moved} moved, {self.replaced} replaced by a newer one, "
            f"{self.dropped} older dropped"
        )
        return f"{verb} {_label(self.merged)} into {_label(self.kept)}" + (
            "" if dry_run else f"; {counts}"
        )


@dataclass
class DedupeReport:
    merges: list[Merge] = field(default_factory=list)
    movies_checked: int = 0


def _label(doc: dict[str, Any]) -> str:
    year = f" ({doc['year']})" if doc.get("year") else ""
    return f'{doc["_id"]} "{doc["title"]}"{year}'


def _ids(doc: dict[str, Any]) -> dict[str, Any]:
    ids = doc.get("external_ids") or {}
    return {k: ids[k] for k in ID_FIELDS if ids.get(k) is not None}


def duplicate_groups(movies: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Groups of records that are one film (union-find over shared ids and title rules)."""
    parent = {m["_id"]: m["_id"] for m in movies}

    def root(key: PydanticObjectId) -> PydanticObjectId:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def join(a: PydanticObjectId, b: PydanticObjectId) -> None:
        parent[root(a)] = root(b)

    first_by: dict[tuple[str, Any], PydanticObjectId] = {}
    for movie in movies:
        ids = _ids(movie)
        for key in [(name, ids[name]) for name in ("imdb", "tmdb") if name in ids]:
            if key in first_by:
                join(movie["_id"], first_by[key])
            else:
                first_by[key] = movie["_id"]
    # A record without ids joins any record of the same title and year, ids or not.
    by_title: dict[tuple[Any, Any], list[dict[str, Any]]] = defaultdict(list)
    for movie in movies:
        by_title[(movie.get("title_key"), movie.get("year"))].append(movie)
    for same in by_title.values():
        bare = [m for m in same if not _ids(m)]
        for movie in same:
            for other in bare:
                join(movie["_id"], other["_id"])

    groups: dict[PydanticObjectId, list[dict[str, Any]]] = defaultdict(list)
    for movie in movies:
        groups[root(movie["_id"])].append(movie)
    return [g for g in groups.values() if len(g) > 1]


def _keeper(group: list[dict[str, Any]]) -> dict[str, Any]:
    return max(
        group,
        key=lambda m: (
            (m.get("rating") or {}).get("count", 0),
            "movielens" in _ids(m),
            # Oldest first: ObjectIds grow with time, so the smallest wins the tie.
            -int(str(m["_id"]), 16),
        ),
    )


async def _move_ratings(kept_id: Any, merged_id: Any, merge: Merge) -> set[Any]:
    """Move the merged record's ratings to the kept one; returns the users touched."""
    moved = await rating_store.move_to(merged_id, kept_id)
    merge.moved += moved.moved
    merge.replaced += moved.replaced
    merge.dropped += moved.dropped
    return moved.users


def _merged_fields(kept: dict[str, Any], merged: dict[str, Any]) -> dict[str, Any]:
    """External ids the kept record lacks, and the other record's names as aliases."""
    update: dict[str, Any] = {}
    kept_ids = _ids(kept)
    for name, value in _ids(merged).items():
        if name not in kept_ids:
            update[f"external_ids.{name}"] = value
    names = [merged["title"], *merged.get("aliases", [])]
    known = {kept["title"].casefold(), *(a.casefold() for a in kept.get("aliases", []))}
    extra = [n for n in dict.fromkeys(names) if n.casefold() not in known]
    if extra:
        update["aliases"] = [*kept.get("aliases", []), *extra]
        update.update(search_fields(kept["title"], update["aliases"]))
    return update


async def dedupe(*, dry_run: bool, prior_votes: float, cache: Cache | None = None) -> DedupeReport:
    """Find every group of duplicate movies and merge it into one record (or only report)."""
    movies = await movie_store.dedupe_cards()
    report = DedupeReport(movies_checked=len(movies))
    for group in duplicate_groups(movies):
        kept = _keeper(group)
        for merged in (m for m in group if m["_id"] != kept["_id"]):
            merge = Merge(kept=kept, merged=merged)
            report.merges.append(merge)
            if dry_run:
                log.info(
                    "duplicate found",
                    extra={"kept": str(kept["_id"]), "merged": str(merged["_id"])},
                )
                continue
            await _merge(kept, merged, merge, prior_votes=prior_votes, cache=cache)
            kept = await movie_store.dedupe_card(kept["_id"]) or kept
    return report


async def _merge(
    kept: dict[str, Any],
    merged: dict[str, Any],
    merge: Merge,
    *,
    prior_votes: float,
    cache: Cache | None,
) -> None:
    raters = await rating_store.raters_of(merged["_id"])
    intent = await summaries.record_intent(movie_ids=[kept["_id"]], user_ids=raters)
    if update := _merged_fields(kept, merged):
        await movie_store.set_fields(kept["_id"], update)
    users = await _move_ratings(kept["_id"], merged["_id"], merge)
    # Deleted as the API deletes a movie; then the ratings written meanwhile move too.
    gone = await summaries.record_intent(movie_ids=[merged["_id"]])
    await movie_store.delete(merged["_id"])
    if cache is not None:
        await cache.movies_deleted([merged["_id"]])
    users |= await _move_ratings(kept["_id"], merged["_id"], merge)
    await summaries.recompute_movies([kept["_id"]], prior_votes=prior_votes)
    await summaries.recompute_users(users | raters)
    await summaries.withdraw_intent(intent)
    await summaries.withdraw_intent(gone)
    if cache is not None:
        await cache.movies_changed([kept["_id"]])
    log.info(
        "duplicate merged",
        extra={
            "kept": str(kept["_id"]),
            "merged": str(merged["_id"]),
            "moved": merge.moved,
            "replaced": merge.replaced,
            "dropped": merge.dropped,
        },
    )
