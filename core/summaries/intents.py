"""Recompute intents written before the writes that need them, and the ratings of deleted
movies and users purged with their other side's recompute noted first."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from core.store import summaries as summary_store
from core.store.summaries import MOVIES, USERS, Target
from core.summaries.recompute import recompute_movies, recompute_users
from models import PydanticObjectId


async def record_intent(
    *, movie_ids: Iterable[Any] = (), user_ids: Iterable[Any] = (), job_id: Any = None
) -> PydanticObjectId:
    """Durably note that these summaries must be recomputed (before the write that needs it);
    returns the intent's id."""
    return await summary_store.insert_intent(movie_ids=movie_ids, user_ids=user_ids, job_id=job_id)


async def withdraw_intent(intent_id: Any) -> None:
    """Drop an intent whose write turned out to change nothing (a 404)."""
    await summary_store.delete_intents([intent_id])


async def purge_ratings(movie_ids: list[Any]) -> None:
    """Delete the ratings of deleted movies, their raters' recompute noted first."""
    await purge(MOVIES, movie_ids)


async def purge_user_ratings(user_ids: list[Any]) -> None:
    """Delete the ratings of deleted users, their movies' recompute noted first."""
    await purge(USERS, user_ids)


async def purge(gone: Target, ids: Iterable[Any]) -> set[Any]:
    """Delete the ratings that name these missing movies (or users), the other side's
    recompute noted first; returns that other side's ids."""
    other = USERS if gone is MOVIES else MOVIES
    touched: set[Any] = set()
    for object_id in ids:
        named = await summary_store.named_by_ratings(other, **{gone.rating_field: object_id})
        if named:
            side = {"user_ids": named} if gone is MOVIES else {"movie_ids": named}
            await record_intent(**side)
            await summary_store.delete_ratings_naming(gone, object_id)
            touched.update(named)
    return touched


async def heal_orphans(ids: Iterable[Any], *, prior_votes: float) -> list[Any]:
    """Purge the ratings naming ids that are neither a movie nor a user any more and
    recompute the other side now; returns the ids purged."""
    ids = list(ids)
    movies, users = await _missing(MOVIES, ids), await _missing(USERS, ids)
    if movies:
        await recompute_users(await purge(MOVIES, movies))
    if users:
        await recompute_movies(await purge(USERS, users), prior_votes=prior_votes)
    return movies + users


async def _missing(target: Target, ids: list[Any]) -> list[Any]:
    """Those of `ids` that rating documents name on `target`'s side but that do not exist."""
    named = [i for i in ids if await summary_store.rated(target, i)]
    existing = set(await summary_store.versions(target, named))
    return [i for i in named if i not in existing]


@dataclass
class Orphans:
    """Ratings that name a movie or a user that does not exist."""

    movies: list[Any] = field(default_factory=list)  # missing movies still rated
    users: list[Any] = field(default_factory=list)  # missing users who still rate
    ratings: int = 0

    @property
    def ids(self) -> list[Any]:
        return self.movies + self.users


async def orphans() -> Orphans:
    """Referential integrity of the ratings: every movie and user they name must exist."""
    found = Orphans()
    for target, into in ((MOVIES, found.movies), (USERS, found.users)):
        named = await summary_store.named_by_ratings(target)
        existing = set(await summary_store.versions(target, named))
        into.extend(i for i in named if i not in existing)
        found.ratings += await summary_store.count_ratings_naming(target, into)
    return found
