"""`python -m api create-admin`, `verify-summaries` and `python -m seed sample` as an operator
runs them."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys

import aiohttp

from core.processes import free_port
from tests.conftest import API, PASSWORD, eventually
from tests.services import settings_env


def _run(settings, *args, stdin=""):
    return subprocess.run(
        [sys.executable, "-m", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=settings_env(settings),
        timeout=120,
        check=False,
    )


def _admin(settings, *flags, stdin=""):
    return _run(settings, "api", "create-admin", *flags, stdin=stdin)


async def test_create_admin_creates_and_never_silently_changes_an_account(settings, db, api):
    done = _admin(settings, "--username", "boss", "--email", "b@example.com", stdin=PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert "created: admin boss" in done.stdout
    user = await db.users.find_one({"username": "boss"})
    assert user["role"] == "admin" and user["password_hash"].startswith("$argon2id$")
    assert "movies:write" in (await api.login("boss"))["scope"]

    carol = await api.user("carol")
    before = await db.users.find_one({"username": "carol"})
    refused = _admin(
        settings, "--username", "carol", "--email", "x@example.com", stdin="another long password\n"
    )
    assert refused.returncode == 1
    assert "--promote" in refused.stderr and "--reset-password" in refused.stderr
    assert await db.users.find_one({"username": "carol"}) == before

    promoted = _admin(settings, "--username", "carol", "--promote")
    assert promoted.returncode == 0 and "promoted: admin carol" in promoted.stdout
    after = await db.users.find_one({"username": "carol"})
    assert after["role"] == "admin"
    assert (after["password_hash"], after["email"]) == (before["password_hash"], before["email"])
    await api.login("carol")  # the old password still works

    reset = _admin(
        settings, "--username", "carol", "--reset-password", stdin="another long password\n"
    )
    assert reset.returncode == 0 and "password reset: admin carol" in reset.stdout
    await api.login("carol", "another long password")
    # Her earlier logins ended with the old password.
    stale = await api.client.post(
        f"{API}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": carol["tokens"]["refresh_token"]},
    )
    assert stale.status == 400


async def test_create_admin_refuses_a_weak_password(settings, db):
    done = _run(
        settings,
        "api",
        "create-admin",
        "--username",
        "boss",
        "--email",
        "b@example.com",
        stdin="short\n",
    )
    assert done.returncode == 2
    assert done.stderr.startswith("refused: password: ") and "{" not in done.stderr
    assert await db.users.count_documents({}) == 0


async def test_seed_sample_only_fills_an_empty_catalogue(settings, db):
    done = _run(settings, "seed", "sample")
    assert done.returncode == 0, done.stderr
    count = await db.movies.count_documents({})
    assert count >= 30
    toy = await db.movies.find_one({"title": "Toy Story"})
    assert toy["year"] == 1995 and "Animation" in toy["genres"] and toy["title_key"] == "toy story"
    done = _run(settings, "seed", "sample")
    assert "no seed" in done.stdout
    assert await db.movies.count_documents({}) == count


async def test_web_concurrency_runs_several_processes_on_one_port(settings, db):
    port = free_port()
    env = {**settings_env(settings), "PORT": str(port), "WEB_CONCURRENCY": "2"}
    env["LOG_LEVEL"] = "INFO"
    proc = subprocess.Popen(
        [sys.executable, "-m", "api", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pids: set[int] = set()
        deadline = asyncio.get_running_loop().time() + 60
        # New connections each time: the kernel spreads them over the processes (once the
        # slower one to start is listening too).
        while len(pids) < 2 and asyncio.get_running_loop().time() < deadline:
            try:
                async with aiohttp.ClientSession() as fresh:
                    async with fresh.get(f"http://127.0.0.1:{port}/health") as resp:
                        assert resp.status == 200
                        pids.add((await resp.json())["pid"])
            except aiohttp.ClientError:
                await asyncio.sleep(0.1)
        assert len(pids) == 2, pids
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired as exc:
            proc.kill()  # its children get SIGTERM from the kernel as it dies (PDEATHSIG)
            output, _ = proc.communicate(timeout=30)
            raise AssertionError(f"the supervisor ignored SIGTERM for 30 s:\n{output}") from exc
    assert proc.returncode == 0, output
    assert '"api processes started"' in output
    for pid in pids:  # every child went with the supervisor
        assert not os.path.exists(f"/proc/{pid}")


async def test_verify_summaries_finds_and_repairs_what_differs(settings, db, api):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    fan = await api.user()
    await api.rate(fan, movie["id"], 4.5)

    async def settled() -> bool:
        doc = await db.movies.find_one({}, {"rating.count": 1})
        return doc["rating"]["count"] == 1

    await eventually(settled)
    await db.movies.update_one({}, {"$set": {"rating.count": 7, "rating.histogram": [7] + [0] * 9}})
    done = await asyncio.to_thread(_run, settings, "api", "verify-summaries", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["ok"] is False and report["users"]["different"] == 0
    assert report["movies"]["different"] == 1 and report["movies"]["checked"] == 1
    assert report["movies"]["differences"][0]["expected"]["count"] == 1

    done = await asyncio.to_thread(_run, settings, "api", "verify-summaries", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 different, 1 repaired" in done.stdout
    assert (await db.movies.find_one({}))["rating"]["count"] == 1
    done = await asyncio.to_thread(_run, settings, "api", "verify-summaries", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["ok"] is True
