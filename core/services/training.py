"""Training: every like read into arrays, item factors learnt, and the result published as
the next model version (workers run it; `recommendations` serves from it)."""

from __future__ import annotations

import asyncio
import time

from core import recommend
from core.settings import Settings
from core.store import recommender as model_store
from models import RecommenderModel


async def train(*, settings: Settings, op_budget: float) -> RecommenderModel | None:
    """Read the likes, learn item factors and publish them as the next version; None when
    nobody likes anything yet. Reading and training run in threads: the loop stays free."""
    started = time.monotonic()
    likes = await asyncio.to_thread(
        model_store.read_likes, settings, liked=recommend.LIKED, op_budget=op_budget
    )
    if not len(likes.users):
        return None
    factors = await asyncio.to_thread(
        recommend.fit,
        likes.users,
        likes.items,
        n_users=likes.n_users,
        n_items=len(likes.movie_ids),
    )
    return await model_store.publish(
        movie_ids=likes.movie_ids,
        items=factors.items,
        likes=len(likes.users),
        users=likes.n_users,
        seconds=time.monotonic() - started,
    )


async def has_model() -> bool:
    """Whether any model was published."""
    return await model_store.has_model()
