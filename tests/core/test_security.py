"""Password hashing in its bounded pool."""

from __future__ import annotations

import asyncio
import threading

import pytest

from core.errors import ServiceUnavailable
from core.security import _PasswordPool


async def test_a_full_password_pool_answers_503_at_once_and_frees_its_places():
    pool = _PasswordPool(workers=1, waiting=1)
    release = threading.Event()
    running = [asyncio.create_task(pool.run(release.wait, 5)) for _ in range(2)]
    await asyncio.sleep(0.05)
    with pytest.raises(ServiceUnavailable) as refused:
        await pool.run(release.wait, 5)
    assert refused.value.headers["Retry-After"] == "1"
    release.set()
    assert await asyncio.gather(*running) == [True, True]
    assert await pool.run(release.wait, 5) is True  # the places came back
