"""Training: every like read into arrays, a model learnt with its similar-movie lists, and
the result published as the next version (workers run it; `recommendations` serves it)."""

from __future__ import annotations

import asyncio
import os
import time
from datetime import datetime

from core import recommend
from core.settings import Settings
from core.store import recommender as model_store
from core.store.leases import IMPORT_LEASE, FencedLease, LeaseBusy, is_held
from core.store.summaries import server_now
from models import RecommenderModel

TRAINING_LEASE = "recommender:train"
SIMILAR_KEPT = 50  # the longest similar list the API serves


async def due(*, settings: Settings) -> str | None:
    """Why a new model is due, or None: there is none (in this layout), an import changed
    ratings since the newest read its likes, enough new likes came through the API, or
    any did and the newest model is RECOMMENDER_MAX_AGE old.
    Never while an import writes: its end asks, and a model of half a release is waste."""
    if await is_held(IMPORT_LEASE):
        return None
    mark = await model_store.newest_data_mark()
    if mark is None:
        return "no model"
    if await model_store.imported_since(mark):
        return "ratings imported"
    wanted = settings.recommender_new_likes
    likes = await model_store.likes_since(mark, at_most=wanted)
    if likes >= wanted:
        return f"{wanted} or more new likes"
    age = (await server_now() - mark).total_seconds()
    if likes and age >= settings.recommender_max_age:
        return f"new likes, and the newest model is {age:.0f} s old"
    return None


def _learn(likes: model_store.Likes, settings: Settings) -> bytes:
    """The model and its neighbours, as stored (CPU-bound: runs in a thread)."""
    model = recommend.fit(
        likes.users, likes.items, likes.times, n_users=likes.n_users, n_items=len(likes.movie_ids)
    )
    matrix = recommend.likes_matrix(
        likes.users, likes.items, n_users=likes.n_users, n_items=len(likes.movie_ids)
    )
    near = recommend.neighbours(
        model, matrix, min_likes=settings.similar_min_likes, kept=SIMILAR_KEPT
    )
    return recommend.dump(model, near)


async def train(*, settings: Settings, op_budget: float) -> RecommenderModel | None:
    """Read the likes, learn a model and publish it as the next version; None when nobody
    likes anything yet. Reading and training run in threads: the loop stays free."""
    started = time.monotonic()
    data_mark: datetime = await server_now()
    likes = await asyncio.to_thread(
        model_store.read_likes, settings, liked=recommend.LIKED, op_budget=op_budget
    )
    if not len(likes.users):
        return None
    data = await asyncio.to_thread(_learn, likes, settings)
    return await model_store.publish(
        movie_ids=likes.movie_ids,
        data=data,
        params=recommend.params_dict(recommend.PARAMS),
        likes=len(likes.users),
        users=likes.n_users,
        seconds=time.monotonic() - started,
        data_mark=data_mark,
    )


async def train_if_due(
    *, settings: Settings, op_budget: float, force: bool = False
) -> tuple[str | None, RecommenderModel | None]:
    """Train when a model is due (or `force`), one worker at a time: (why, the model)."""
    lease = FencedLease(TRAINING_LEASE, holder=f"pid:{os.getpid()}", ttl=60)
    try:
        async with lease.held():
            # Looked at under the lease: a training that just ended has made it fresh.
            why = "asked" if force else await due(settings=settings)
            if why is None:
                return None, None
            return why, await train(settings=settings, op_budget=op_budget)
    except LeaseBusy:
        return None, None  # another worker trains; beat looks again afterwards


async def ratings_imported() -> None:
    """Note that an import changed ratings: the next look finds a model due."""
    await model_store.ratings_imported()


async def has_model() -> bool:
    """Whether any model was published."""
    return await model_store.has_model()
