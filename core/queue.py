"""Enqueueing by task name, and the Redis-side coalescing of aggregation work."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import Executor
from functools import partial
from typing import Any

from celery import Celery
from redis.asyncio import Redis
from redis.exceptions import RedisError

from core.cache import RedisHealth
from core.logs import request_id_var
from core.settings import Settings

log = logging.getLogger(__name__)

AGGREGATE_MOVIE = "ratings.aggregate_movie"
AGGREGATE_USER = "ratings.aggregate_user"
PURGE_MOVIE_RATINGS = "movies.purge_ratings"
REFRESH_WEIGHTED = "ratings.refresh_weighted"
RUN_IMPORT = "imports.run"
REQUEUE_STALE_IMPORTS = "imports.requeue_stale"
RECONCILE = "ratings.reconcile"

# A pending key exists from the moment a recomputation is enqueued until the task starts.
# Writes that find it set need no task of their own: the queued one will read them.
PENDING_TTL = 300


def pending_key(kind: str, object_id: str) -> str:
    return f"agg:pending:{kind}:{object_id}"


def celery_config(settings: Settings) -> dict[str, Any]:
    """Configuration shared by the API's producer and the workers."""
    return {
        "broker_url": settings.redis_url_required,
        "task_default_queue": settings.celery_queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 4,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "task_publish_retry_policy": {
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "worker_hijack_root_logger": False,
        "timezone": "UTC",
    }


def make_producer(settings: Settings) -> Celery:
    """A Celery app used only to publish: it knows task names, not task code."""
    app = Celery("movie-ratings-api", set_as_current=False)
    app.conf.update(celery_config(settings))
    return app


class TaskQueue:
    """Publishes tasks by name; coalesces aggregation requests through Redis."""

    def __init__(
        self,
        *,
        celery: Celery,
        redis: Redis,
        settings: Settings,
        executor: Executor | None = None,
        health: RedisHealth | None = None,
    ) -> None:
        self._celery = celery
        self._redis = redis
        self._executor = executor
        self._delay = settings.aggregation_delay
        self._health = health or RedisHealth()

    async def send(self, name: str, *args: Any, countdown: float | None = None) -> None:
        """Publish task `name`; the kombu call blocks, so the API runs it off the loop."""
        call = partial(
            self._celery.send_task,
            name,
            args=list(args),
            countdown=countdown,
            headers={"request_id": request_id_var.get()},
        )
        if self._executor is None:
            call()
        else:
            await asyncio.get_running_loop().run_in_executor(self._executor, call)

    async def schedule_aggregation(
        self,
        *,
        movie_ids: Sequence[str] = (),
        user_ids: Sequence[str] = (),
    ) -> list[tuple[str, str]]:
        """Ask for exact recomputations, at most one queued per movie or user at a time.

        Returns the (kind, id) pairs that could not be queued (the broker is down): the
        caller records them for the reconciliation task instead.
        """
        wanted = [("movie", m, AGGREGATE_MOVIE) for m in movie_ids] + [
            ("user", u, AGGREGATE_USER) for u in user_ids
        ]
        if not wanted:
            return []
        if not self._health.available:  # a recent failure: do not make this request wait
            return [(kind, object_id) for kind, object_id, _ in wanted]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for kind, object_id, _ in wanted:
                    pipe.set(pending_key(kind, object_id), "1", nx=True, ex=PENDING_TTL)
                claimed = await pipe.execute()
        except RedisError as exc:
            self._health.failed(exc)
            return [(kind, object_id) for kind, object_id, _ in wanted]
        missed: list[tuple[str, str]] = []
        for (kind, object_id, task), mine in zip(wanted, claimed, strict=True):
            if not mine:
                continue
            try:
                await self.send(task, object_id, countdown=self._delay or None)
            except Exception as exc:
                self._health.failed(exc)
                missed.append((kind, object_id))
                # Free the slot so the next write tries again instead of waiting for the TTL.
                try:
                    await self._redis.delete(pending_key(kind, object_id))
                except RedisError:
                    pass
        return missed

    async def release_pending(self, kind: str, object_id: str) -> None:
        """Delete the pending key as the task starts: later writes must enqueue a new task."""
        await self._redis.delete(pending_key(kind, object_id))
