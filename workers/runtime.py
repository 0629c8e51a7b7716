"""Per-process worker runtime: one event loop, one database client, one Redis client.

Async clients belong to the event loop they were made on, so each worker child builds its
own loop and clients once (worker_process_init) and runs every task on that loop. Nothing is
shared across the fork.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

from celery import signals
from redis.asyncio import Redis

from core import store
from core.cache import Cache, cache_for
from core.logs import request_id_var
from core.queue import TaskQueue
from core.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class Runtime:
    settings: Settings
    loop: asyncio.AbstractEventLoop
    mongo: store.Client
    redis: Redis
    queue: TaskQueue
    cache: Cache


_runtime: Runtime | None = None


def start_runtime() -> Runtime:
    """Create this process's loop and clients (idempotent)."""
    global _runtime
    if _runtime is None:
        from workers.app import app

        settings = Settings()
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        mongo = loop.run_until_complete(
            store.connect(settings, op_budget=settings.mongodb_worker_timeout)
        )
        redis = Redis.from_url(settings.redis_url_required, socket_timeout=5)
        cache = cache_for(settings, redis)
        _runtime = Runtime(
            settings=settings,
            loop=loop,
            mongo=mongo,
            redis=redis,
            queue=TaskQueue(celery=app, redis=redis, settings=settings, health=cache.health),
            cache=cache,
        )
        log.info("worker runtime ready")
    return _runtime


def stop_runtime() -> None:
    global _runtime
    if _runtime is not None:
        rt, _runtime = _runtime, None
        rt.loop.run_until_complete(rt.redis.aclose())
        rt.loop.run_until_complete(store.close(rt.mongo))
        rt.loop.close()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a task's coroutine on this process's loop."""
    return start_runtime().loop.run_until_complete(coro)


@signals.worker_process_init.connect
def _on_process_init(**kwargs: Any) -> None:
    start_runtime()


@signals.worker_process_shutdown.connect
def _on_process_shutdown(**kwargs: Any) -> None:
    stop_runtime()


@signals.task_prerun.connect
def _bind_request_id(task: Any = None, **kwargs: Any) -> None:
    request_id_var.set(getattr(task.request, "request_id", None) if task else None)
