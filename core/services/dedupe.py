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

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
from core.search import search_fields
from core.services import aggregation
from models import Movie, Rating

log = logging.getLogger(__name__)
ID_FIELDS = ("imdb", "tmdb", "movielens")
CARD = {"title": 1, "title_key": 1, "year": 1, "aliases": 1, "external_ids": 1, "rating.count": 1}


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

    def root(key: ObjectId) -> ObjectId:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    def join(a: ObjectId, b: ObjectId) -> None:
        parent[root(a)] = root(b)

    first_by: dict[tuple[str, Any], ObjectId] = {}
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

    groups: dict[ObjectId, list[dict[str, Any]]] = defaultdict(list)
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


async def _move_ratings(kept_id: ObjectId, merged_id: ObjectId, merge: Merge) -> set[ObjectId]:
    """Move the merged record's ratings to the kept one; returns the users touched."""
    ratings = Rating.get_motor_collection()
    users: set[ObjectId] = set()
    async for rating in ratings.find({"movie_id": merged_id}):
        users.add(rating["user_id"])
        try:
            moved = await ratings.update_one(
                {"_id": rating["_id"]}, {"$set": {"movie_id": kept_id}, **aggregation.MARK_CHANGED}
            )
            if moved.modified_count:
                merge.moved += 1
                continue
        except DuplicateKeyError:
            pass  # the user rated both: the newer rating wins
        theirs = await ratings.find_one({"user_id": rating["user_id"], "movie_id": kept_id})
        if theirs is not None and rating["updated_at"] > theirs["updated_at"]:
            newer = {k: rating[k] for k in ("score", "rated_at", "updated_at")}
            await ratings.update_one(
                {"_id": theirs["_id"], "updated_at": theirs["updated_at"]},
                {"$set": newer, **aggregation.MARK_CHANGED},
            )
            merge.replaced += 1
        else:
            merge.dropped += 1
        await ratings.delete_one({"_id": rating["_id"]})
    return users


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
    collection = Movie.get_motor_collection()
    movies = [doc async for doc in collection.find({}, CARD)]
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
            kept = await collection.find_one({"_id": kept["_id"]}, CARD) or kept
    return report


async def _merge(
    kept: dict[str, Any],
    merged: dict[str, Any],
    merge: Merge,
    *,
    prior_votes: float,
    cache: Cache | None,
) -> None:
    ratings = Rating.get_motor_collection()
    raters = set(await ratings.distinct("user_id", {"movie_id": merged["_id"]}))
    intent = await aggregation.record_intent(movie_ids=[kept["_id"]], user_ids=raters)
    if update := _merged_fields(kept, merged):
        await Movie.get_motor_collection().update_one({"_id": kept["_id"]}, {"$set": update})
    users = await _move_ratings(kept["_id"], merged["_id"], merge)
    # Deleted as the API deletes a movie; then the ratings written meanwhile move too.
    gone = await aggregation.record_intent(movie_ids=[merged["_id"]])
    await Movie.get_motor_collection().delete_one({"_id": merged["_id"]})
    if cache is not None:
        await cache.movies_deleted([merged["_id"]])
    users |= await _move_ratings(kept["_id"], merged["_id"], merge)
    await aggregation.recompute_movies([kept["_id"]], prior_votes=prior_votes)
    await aggregation.recompute_users(users | raters)
    await aggregation.withdraw_intent(intent)
    await aggregation.withdraw_intent(gone)
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
