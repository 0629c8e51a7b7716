"""`python -m embedded` (what `make run` starts): the whole stack, then a clean stop."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiohttp

from core.processes import free_port
from tests.conftest import PASSWORD


async def _wait_ready(session, base, proc, timeout=90.0):
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        assert proc.poll() is None, "the embedded stack exited while starting"
        try:
            async with session.get(f"{base}/ready") as resp:
                if resp.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.3)
    raise AssertionError("the embedded stack never became ready")


async def test_embedded_stack_serves_rates_converges_and_stops(tmp_path):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MONGODB_URL", "REDIS_URL", "TOKEN_SIGNING_KEYS"}
    }
    env.update(
        PORT=str(port), DATA_DIR=str(tmp_path), ENVIRONMENT="development", AGGREGATION_DELAY="0.05"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "embedded"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_ready(http, base, proc)
            api = f"{base}/api/v1"
            async with http.get(f"{api}/movies?q=toy story") as resp:
                movie = (await resp.json())["items"][0]  # the shipped sample was seeded
            user = {
                "username": "eve",
                "email": "eve@example.com",
                "display_name": "Eve",
                "password": PASSWORD,
            }
            async with http.post(f"{api}/users", json=user) as resp:
                assert resp.status == 201
            form = {"grant_type": "password", "username": "eve", "password": PASSWORD}
            async with http.post(f"{api}/auth/token", data=form) as resp:
                auth = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
            async with http.put(
                f"{api}/movies/{movie['id']}/rating", json={"score": 4.5}, headers=auth
            ) as resp:
                assert resp.status == 201
            for _ in range(200):
                async with http.get(f"{api}/movies/{movie['id']}") as resp:
                    if (await resp.json())["rating"]["count"] == 1:
                        break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the summary never converged")
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
    log = out.decode(errors="replace")
    assert proc.returncode == 0, log[-3000:]
    for component in ("secantusdb", "redis", "worker", "beat", "api"):
        assert f'"component":"{component}"' in log
    # Ctrl-C stops the parts one after another, newest first: nothing still running needs a
    # part that has already gone (the worker hands its tasks back to a Redis that is up).
    stopped = [line.split('"message":"stopping ')[1].split('"')[0]
               for line in log.splitlines() if '"message":"stopping ' in line]  # fmt: skip
    assert stopped == ["api", "beat", "worker", "redis", "secantusdb"], log[-3000:]
    # Every child is gone: nothing listens on the API port any more.
    assert not _listening(port)


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0
