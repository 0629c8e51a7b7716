"""The served runner against slow clients: head and body timeouts, and a connection cap
that closes the oldest connection not being answered."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from aiohttp import web

from api.app import create_app
from api.server import make_runner
from core.processes import free_port
from core.settings import Settings
from tests.conftest import API

HEAD = b"GET /health HTTP/1.1\r\nHost: x\r\n"


@asynccontextmanager
async def _served(settings: Settings, **limits: float) -> AsyncIterator[int]:
    tuned = settings.model_copy(update=limits)
    runner = make_runner(create_app(tuned), tuned)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        yield port
    finally:
        await runner.cleanup()


async def _closed_within(reader: asyncio.StreamReader, seconds: float) -> float:
    """Seconds until the server closed the connection (EOF), failing past `seconds`."""
    started = time.monotonic()
    await asyncio.wait_for(reader.read(), timeout=seconds)
    return time.monotonic() - started


async def _health(port: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(HEAD + b"Connection: close\r\n\r\n")
    answer = await asyncio.wait_for(reader.read(), timeout=5)
    writer.close()
    return int(answer.split(b" ", 2)[1])


async def test_a_half_sent_or_silent_request_is_closed_after_the_head_timeout(settings, db):
    async with _served(settings, http_header_timeout=0.5) as port:
        for sent in (b"", HEAD):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(sent)
            assert await _closed_within(reader, 5) < 3
            writer.close()
        # A keep-alive connection's next request is timed from its own first byte.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(HEAD + b"\r\n")
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"GET /health HTTP/1.1\r\n")
        assert await _closed_within(reader, 5) < 3
        writer.close()


async def test_a_trickled_body_is_a_408(settings, db):
    async with _served(settings, http_body_timeout=0.5) as port:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"POST {API}/users HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            "Content-Length: 100\r\n\r\n{".encode()
        )
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
        assert head.split(b" ", 2)[1] == b"408"
        assert b"application/problem+json" in head
        writer.close()


async def test_past_the_cap_the_oldest_idle_connection_goes_and_health_answers(settings, db):
    async with _served(settings, http_max_connections=10, http_header_timeout=60) as port:
        idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(10)]
        await asyncio.sleep(0.1)
        assert await _health(port) == 200  # the eleventh: the oldest idle one made room
        oldest_reader, _ = idle[0]
        assert await _closed_within(oldest_reader, 5) < 5
        for _, writer in idle:
            writer.close()
