"""The drain lock on the test Redis: held for as long as a drain runs, however long."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis.asyncio import Redis

from core import queue as queue_module
from core.queue import DRAIN_LOCK_KEY, TaskQueue


class NoCelery:
    def send_task(self, name: str, args: list[Any], **kwargs: Any) -> None:
        raise AssertionError("nothing is sent here")


@pytest.fixture
async def queue(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(queue_module, "DRAIN_LOCK_TTL", 0.6)  # extended every 0.2 s
    async with Redis.from_url(settings.redis_url_required) as redis:
        await redis.delete(DRAIN_LOCK_KEY)
        yield TaskQueue(celery=NoCelery(), redis=redis, settings=settings)  # type: ignore[arg-type]
        await redis.delete(DRAIN_LOCK_KEY)


async def test_a_drain_longer_than_the_locks_expiry_keeps_it(queue: TaskQueue) -> None:
    async with queue.drain_turn() as turn:
        assert turn is not None
        await asyncio.sleep(1.5)  # 2.5 expiries: a round under load
        async with queue.drain_turn() as second:
            assert second is None  # no second drain beside the first
        assert turn.held()
    async with queue.drain_turn() as after:
        assert after is not None  # released at the end


async def test_a_drain_that_lost_its_lock_is_told(queue: TaskQueue, settings: Any) -> None:
    async with Redis.from_url(settings.redis_url_required) as redis:
        async with queue.drain_turn() as turn:
            assert turn is not None
            await redis.set(DRAIN_LOCK_KEY, "someone else")  # e.g. a Redis that restarted
            for _ in range(20):
                if not turn.held():
                    break
                await asyncio.sleep(0.1)
            assert not turn.held()
        assert await redis.get(DRAIN_LOCK_KEY) == b"someone else"  # not released by us
