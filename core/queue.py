"""Enqueueing by task name, and the Redis-side coalescing of drains."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from celery import Celery
from redis.asyncio import Redis
from redis.asyncio.lock import Lock
from redis.exceptions import LockError, RedisError

from core.cache import RedisHealth
from core.logs import request_id_var
from core.settings import Settings

log = logging.getLogger(__name__)

DRAIN_SUMMARIES = "summaries.drain"
REFRESH_WEIGHTED = "ratings.refresh_weighted"
RUN_IMPORT = "imports.run"
REQUEUE_STALE_IMPORTS = "imports.requeue_stale"
INDEX_TITLES = "movies.index_titles"
TRAIN_RECOMMENDER = "recommender.train"

# Set from the moment a drain is queued until it starts: writes meanwhile need no task of
# their own, the queued drain will read their stamps. Only an optimisation: the intents are in
# MongoDB and beat drains every few seconds, so a key a crash leaves behind costs at most its
# TTL in latency, never a summary.
DRAIN_PENDING_KEY = "agg:drain:queued"
DRAIN_PENDING_TTL = 5
# One drain runs at a time (two would read the same stamps and do the work twice). Its
# holder extends the lock every third of this many seconds while it runs, however long a
# round takes under load; a killed worker's lock expires this many seconds later.
DRAIN_LOCK_KEY = "agg:drain:running"
DRAIN_LOCK_TTL = 10

# Redis redelivers a message its worker took but never acknowledged after this many seconds
# (kombu's default is an hour). Aggregation needs no redelivery (beat drains the intents);
# an import that outlives it is redelivered, finds the job's heartbeat fresh (JobBusy) and
# looks again later, so it only has to exceed the short tasks.
VISIBILITY_TIMEOUT = 300


def celery_config(settings: Settings) -> dict[str, Any]:
    """Configuration shared by the API's producer and the workers."""
    return {
        "broker_url": settings.redis_url_required,
        "task_default_queue": settings.celery_queue,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # A task whose worker dies (kill -9, OOM) goes back to the queue rather than vanishing.
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
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
    """Publishes tasks by name; coalesces drain requests through Redis."""

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

    async def request_drain(self) -> bool:
        """Queue one drain of the recompute intents unless one is already queued; False when
        the broker could not be reached (the intents wait in MongoDB for beat's drain)."""
        if not self._health.available:  # a recent failure: do not make this request wait
            return False
        try:
            if not await self._redis.set(DRAIN_PENDING_KEY, "1", nx=True, ex=DRAIN_PENDING_TTL):
                return True
        except RedisError as exc:
            self._health.failed(exc)
            return False
        try:
            await self.send(DRAIN_SUMMARIES, countdown=self._delay or None)
        except Exception as exc:  # kombu raises its own and OS errors when the broker is gone
            self._health.failed(exc)
            try:  # free the slot so the next write tries again
                await self._redis.delete(DRAIN_PENDING_KEY)
            except RedisError:
                pass
            return False
        return True

    async def drain_started(self) -> None:
        """A drain is running: writes from now on need a drain of their own."""
        await self._redis.delete(DRAIN_PENDING_KEY)

    def drain_lock(self) -> Lock:
        """redis-py's lock (a token, an expiry, release only by its holder) for draining."""
        return self._redis.lock(DRAIN_LOCK_KEY, timeout=DRAIN_LOCK_TTL, blocking=False)

    @asynccontextmanager
    async def drain_turn(self) -> AsyncIterator[DrainTurn | None]:
        """The drain lock, held while the block runs, or None when another drain holds it.

        Extended every third of its expiry meanwhile: a round that outlived the lock let a
        second drain start beside the first, doubling the database's load (a round took 17 s
        under make bench's PUT load). The turn says when an extension failed.
        """
        lock = self.drain_lock()
        if not await lock.acquire():
            yield None
            return
        turn = DrainTurn()
        keeper = asyncio.create_task(_keep(lock, turn))
        try:
            yield turn
        finally:
            keeper.cancel()
            try:
                await lock.release()
            except LockError:  # expired or taken over meanwhile: nothing of ours to release
                pass


class DrainTurn:
    """A drain's hold on the lock: `held()` turns False once it could not be extended."""

    def __init__(self) -> None:
        self.lost = False

    def held(self) -> bool:
        return not self.lost


async def _keep(lock: Lock, turn: DrainTurn) -> None:
    """Extend `lock` every third of its expiry until cancelled or an extension fails."""
    while True:
        await asyncio.sleep(DRAIN_LOCK_TTL / 3)
        try:
            await lock.reacquire()
        except (LockError, RedisError) as exc:
            log.warning("drain lock lost: %s", type(exc).__name__)
            turn.lost = True
            return
