"""`python -m embedded` (what `make run` starts): the whole stack, then a clean stop."""

from __future__ import annotations

import asyncio
import os
import resource
import signal
import subprocess
import sys
import time
from functools import partial

import aiohttp
import pytest
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from core import store
from core.processes import Component, Health, Supervisor, free_port
from embedded import stack as embedded
from tests.conftest import PASSWORD
from tests.services import database_env


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
    data = tmp_path / "data"
    env.update(
        PORT=str(port), DATA_DIR=str(data), ENVIRONMENT="development", AGGREGATION_DELAY="0.05"
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
            _private(data)
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


def _private(data) -> None:
    """The data folder and everything in it are its owner's alone, and the database and
    Redis refuse clients without the stack's credentials."""
    import json
    from urllib.parse import urlsplit

    from pymongo.errors import OperationFailure
    from redis import Redis
    from redis.exceptions import AuthenticationError, ResponseError

    assert data.stat().st_mode & 0o777 == 0o700
    for path in data.rglob("*"):
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    urls = json.loads((data / "embedded.json").read_text())
    database = urlsplit(urls["mongodb_url"])
    assert database.password  # the stack's own clients log in
    anonymous = MongoClient(f"mongodb://{database.hostname}:{database.port}", timeoutMS=5000)
    try:
        anonymous.movie_ratings.users.find_one()
        raise AssertionError("the database answered a client without credentials")
    except OperationFailure as exc:
        assert exc.code == 13  # Unauthorized
    finally:
        anonymous.close()
    cache = urlsplit(urls["redis_url"])
    assert cache.password
    with Redis(host=cache.hostname, port=cache.port, socket_timeout=5) as anonymous_redis:
        with pytest.raises((AuthenticationError, ResponseError)):  # NOAUTH
            anonymous_redis.get("x")


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


class _NoStop:
    received = False
    forced = False


def test_a_database_that_cannot_write_is_restarted_with_every_acknowledged_write(tmp_path):
    """A full disk, as an unprivileged stand-in: the database process may write no file past
    its first 4 KiB (RLIMIT_FSIZE, set on the running process). Its storage engine panics at
    its next journal write and answers
    every command with an error while it stays alive; the supervisor's write probe kills it
    and starts it again (without the cap: the space is back), and every write it had
    acknowledged is there."""
    port = free_port()
    url = f"mongodb://127.0.0.1:{port}"
    supervisor = Supervisor(_NoStop())
    db = supervisor.add(
        Component(
            "secantusdb",
            partial(
                embedded.start_secantus, storage=str(tmp_path / "db"), port=port,
                log_file=tmp_path / "db.log", env=database_env(),
            ),
            health=Health(embedded.WriteProbe(url, "probe"), every=0.2, failures=2),
            backoff_max=0.2,
        )
    )  # fmt: skip
    client: MongoClient = MongoClient(url, w="majority", journal=True, timeoutMS=5000)
    try:
        docs = client.t.docs
        acknowledged = [docs.insert_one({"n": n}).inserted_id for n in range(50)]
        assert db.proc is not None
        resource.prlimit(db.proc.pid, resource.RLIMIT_FSIZE, (4096, 4096))
        refused = None
        for n in range(50, 5050):
            try:
                acknowledged.append(docs.insert_one({"n": n, "pad": "x" * 2000}).inserted_id)
            except PyMongoError as exc:
                refused = exc
                break
        assert refused is not None, "the capped database kept writing"
        assert store.unavailable(refused), refused  # a 503 with Retry-After, not a 500
        first = db.proc
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (db.proc is first or db.restart_at is not None):
            supervisor.check()
            time.sleep(0.05)
        assert first.returncode == -signal.SIGKILL and supervisor.restarts >= 1
        stored = {d["_id"] for d in docs.find({}, {"_id": 1})}
        assert set(acknowledged) <= stored
        docs.insert_one({"n": "after"})  # it writes again
    finally:
        client.close()
        supervisor.stop()


def _stack_env(data, port, runtime) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"MONGODB_URL", "REDIS_URL", "TOKEN_SIGNING_KEYS", "DATA_DIR"}
    }
    # XDG_RUNTIME_DIR: where stacks list themselves; this test's own, not the machine's.
    env.update(PORT=str(port), ENVIRONMENT="development", XDG_RUNTIME_DIR=str(runtime))
    if data is not None:
        env["DATA_DIR"] = str(data)
    return env


def _files(data) -> dict[str, tuple[int, int]]:
    """Size and modification time of what a running stack keeps in its folder's top and logs."""
    found = {}
    for path in [*data.glob("*"), *(data / "logs").glob("*")]:
        if path.is_file() and path.name != "stack.lock":
            info = path.stat()
            found[str(path)] = (info.st_size, info.st_mtime_ns)
    return found


async def test_two_stacks_on_one_machine_never_share_a_port_or_a_folder(tmp_path):
    """A second stack on a port or a folder in use is refused in one line and touches nothing
    of the first; with two running, operator commands act on DATA_DIR's and say so, and
    refuse to guess without it."""
    runtime = tmp_path / "run"
    runtime.mkdir()
    first, second = tmp_path / "first", tmp_path / "second"
    port, other_port = free_port(), free_port()
    run = partial(subprocess.Popen, [sys.executable, "-m", "embedded"],
                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT)  # fmt: skip
    one = run(env=_stack_env(first, port, runtime))
    two = None
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_ready(http, f"http://127.0.0.1:{port}", one)
            before = _files(first)
            urls = (first / "embedded.json").read_text()
            for data, on_port, refused in (
                (second, port, f"port {port} on 127.0.0.1 is in use"),
                (first, other_port, f"DATA_DIR {first} is in use by the stack {first} (pid "),
            ):
                done = subprocess.run(
                    [sys.executable, "-m", "embedded"], env=_stack_env(data, on_port, runtime),
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                assert done.returncode == 2, done.stdout + done.stderr
                assert done.stderr.startswith(f"error: {refused}") and done.stderr.count("\n") == 1
                assert not _listening(other_port)
            # Nothing of the first was touched: every file still there, none cut short or
            # rewritten (its own processes only append), its URLs the same.
            after = _files(first)
            assert all(after.get(path, (-1, 0))[0] >= size for path, (size, _) in before.items())
            assert (first / "embedded.json").read_text() == urls
            assert (first / "imports").is_dir()  # where POST /imports reads from, made at start
            assert not (second / "db").exists()

            two = run(env=_stack_env(second, other_port, runtime))
            await _wait_ready(http, f"http://127.0.0.1:{other_port}", two)
            for data in (first, second):
                done = subprocess.run(
                    [sys.executable, "-m", "api", "create-admin", "--username", f"root-{data.name}",
                     "--email", f"{data.name}@example.com"],
                    input=PASSWORD, env=_stack_env(data, 1, runtime), cwd=tmp_path,
                    capture_output=True, text=True, timeout=60, check=False,
                )  # fmt: skip
                assert done.returncode == 0, done.stdout + done.stderr
                assert done.stderr.startswith(f"stack: {data} (database mongodb://127.0.0.1:")
                assert "@" not in done.stderr.splitlines()[0]  # no credentials
            for base, data in ((port, first), (other_port, second)):
                form = {"grant_type": "password", "password": PASSWORD}
                for name in ("first", "second"):
                    async with http.post(
                        f"http://127.0.0.1:{base}/api/v1/auth/token",
                        data={**form, "username": f"root-{name}"},
                    ) as resp:
                        assert (resp.status == 200) == (name == data.name)
            done = subprocess.run(
                [sys.executable, "-m", "api", "client", "list"],
                env=_stack_env(None, 1, runtime), cwd=tmp_path,
                capture_output=True, text=True, timeout=60, check=False,
            )  # fmt: skip
            assert done.returncode == 2 and "2 stacks are running; set DATA_DIR" in done.stderr
            assert str(first) in done.stderr and str(second) in done.stderr
    finally:
        for proc in (two, one):
            if proc is not None:
                proc.send_signal(signal.SIGINT)
                proc.communicate(timeout=60)
    assert not _listening(port) and not _listening(other_port)
