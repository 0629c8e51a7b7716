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
import pytest

from core import summaries
from core.processes import free_port
from tests.conftest import API, PASSWORD, eventually
from tests.seed.releases import write_release
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
    where, refused = done.stderr.split("\n", 1)
    assert where == f"database: {settings.mongodb_url} (MONGODB_URL)"
    assert refused.startswith("refused: password: ") and "{" not in refused
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


async def test_a_command_line_import_is_followed_by_a_trained_model(settings, db, worker, tmp_path):
    folder = write_release(tmp_path / "rel")
    done = _run(settings, "seed", "movielens", str(folder))
    assert done.returncode == 0, done.stderr
    assert "a new model was asked for" in done.stdout

    async def trained():
        return await db.recommender_models.find_one({"ready": True})

    model = await eventually(trained, timeout=60)
    assert model["likes"] == 3
    done = _run(settings, "seed", "movielens", str(folder))  # unchanged: nothing to learn
    assert done.returncode == 0 and "recommendations" not in done.stdout
    await asyncio.sleep(1)
    assert await db.recommender_models.count_documents({}) == 1


async def test_seed_dedupe_lists_then_merges(settings, db):
    first = {"title": "Heat", "title_key": "heat", "year": 1995, "external_ids": {"imdb": "tt1"}}
    await db.movies.insert_many([first, {**first, "external_ids": {"imdb": "tt1", "tmdb": 9}}])
    done = _run(settings, "seed", "dedupe", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert "would merge" in done.stdout and "would merge 1 duplicates" in done.stdout
    assert await db.movies.count_documents({}) == 2
    done = _run(settings, "seed", "dedupe")
    assert done.returncode == 0, done.stderr
    assert "merged 1 duplicates" in done.stdout
    kept = await db.movies.find_one({})
    assert await db.movies.count_documents({}) == 1 and kept["external_ids"]["tmdb"] == 9


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


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def test_every_command_and_option_says_what_it_does():
    from api.__main__ import build_parser as api_parser
    from seed.__main__ import build_parser as seed_parser

    undocumented = []
    for program in (api_parser(), seed_parser()):
        commands = _subparsers(program)
        helps = {a.dest: a.help for a in program._subparsers._group_actions[0]._choices_actions}
        for name, command in commands.items():
            if not helps.get(name):
                undocumented.append(f"{program.prog} {name}")
            for option in command._actions:
                if option.dest != "help" and not option.help:
                    undocumented.append(f"{program.prog} {name} {option.dest}")
    assert undocumented == []


def test_help_describes_and_never_starts_anything(tmp_path):
    """--help of every command says what it does and what it reads, and starts nothing; a
    wrong option is answered with that command's usage, not the top level's."""
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data")}
    for args in (["embedded"], ["api", "serve"], ["seed", "sample"], ["api", "create-client"]):
        done = subprocess.run([sys.executable, "-m", *args, "--help"], capture_output=True,
                              text=True, env=env, timeout=60, check=False)  # fmt: skip
        assert done.returncode == 0 and "environment (default in brackets" in done.stdout
        assert "MONGODB_URL" in done.stdout and len(done.stdout.splitlines()) > 8, args
    assert not (tmp_path / "data").exists()  # nothing was started
    serve = [sys.executable, "-m", "api", "serve", "--port", "1", "--bogus"]
    done = subprocess.run(serve, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("usage: python -m api serve") and "--bogus" in done.stderr


def test_serve_without_a_database_url_says_what_to_set(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URL", "REDIS_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "api", "serve"],
        capture_output=True, text=True, env={**env, "DATA_DIR": str(tmp_path)}, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "MONGODB_URL" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_bad_setting_is_one_line(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "api", "create-client", "--name", "x", "--scope", "movies:write"],
        capture_output=True, text=True, env={**os.environ, "PORT": "not-a-port"}, timeout=60,
        check=False,
    )  # fmt: skip
    assert done.returncode == 2 and done.stderr.startswith("error: bad setting: PORT")
    assert "Traceback" not in done.stderr


def test_commands_find_their_stack_and_refuse_to_guess(settings, tmp_path, monkeypatch):
    """DATA_DIR's running stack, else ./data's, else MONGODB_URL, else the one stack this
    user runs; several and no DATA_DIR: refused with the list. A stack that stopped (its
    lock released) is never used."""
    from core import stacks
    from core.settings import Settings

    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    for name in ("MONGODB_URL", "DATA_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    urls = {"mongodb_url": "mongodb://op:pw@127.0.0.1:1/?authSource=admin",
            "redis_url": settings.redis_url}  # fmt: skip

    def start(name: str, pid: int):
        data = tmp_path / name
        data.mkdir()
        (data / stacks.URLS_FILE).write_text(json.dumps(urls))
        info = stacks.StackInfo(str(data), pid, "http://127.0.0.1:9/api/v1", "now")
        return data, stacks.hold(data, info), stacks.register(info)

    starting = tmp_path / "starting"
    starting.mkdir()
    held = stacks.hold(starting, stacks.StackInfo(str(starting), 1, "x", "now"))  # no URLs yet
    with pytest.raises(stacks.StackNotFound, match="is still starting"):
        stacks.for_command(Settings(data_dir=starting))
    held.close()
    nowhere = Settings(data_dir=tmp_path / "nowhere")
    with pytest.raises(stacks.StackNotFound, match="no stack runs in DATA_DIR"):
        stacks.for_command(nowhere)
    one, one_lock, _ = start("one", os.getpid())
    found, where = stacks.for_command(Settings(_env_file=None))  # no DATA_DIR, no ./data
    assert found.mongodb_url == urls["mongodb_url"] and found.data_dir == one
    assert where == f"stack: {one} (database mongodb://127.0.0.1:1/?authSource=admin)"
    two, two_lock, _ = start("two", os.getpid() + 1)
    with pytest.raises(stacks.StackNotFound, match="2 stacks are running") as several:
        stacks.for_command(Settings())
    assert str(one) in str(several.value) and str(two) in str(several.value)
    assert stacks.for_command(Settings(data_dir=two))[0].data_dir == two
    with pytest.raises(stacks.FolderInUse, match=f"DATA_DIR {two} is in use by the stack"):
        stacks.hold(two, stacks.StackInfo(str(two), 1, "x", "now"))
    _, where = stacks.for_command(Settings(mongodb_url=settings.mongodb_url))
    assert where.endswith("(MONGODB_URL)")
    two_lock.close()  # the second stops: the first is the only one again
    assert stacks.for_command(Settings())[0].data_dir == one
    one_lock.close()
    with pytest.raises(stacks.StackNotFound, match="no stack runs"):
        stacks.for_command(Settings())


async def test_verify_summaries_finds_and_purges_orphan_ratings(settings, db, api):
    admin = await api.user("root", admin=True)
    kept, gone = await api.movie(admin, title="Kept"), await api.movie(admin, title="Gone")
    fan = await api.user()
    await api.rate(fan, kept["id"], 4.0)
    await api.rate(fan, gone["id"], 2.0)

    async def settled() -> bool:
        user = await db.users.find_one({"username": fan["username"]})
        return user["stats"]["count"] == 2 and not await summaries.undrained()

    await eventually(settled)
    # Deleted behind the API's back: its rating stays, and the fan's stats still count it.
    await db.movies.delete_one({"title": "Gone"})
    done = await asyncio.to_thread(_run, settings, "api", "verify-summaries", "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["integrity"]["orphan_ratings"] == 1
    assert report["integrity"]["missing_movies"] == [gone["id"]]
    assert report["users"]["different"] == 0  # the stats agree with the ratings stored

    done = await asyncio.to_thread(_run, settings, "api", "verify-summaries", "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 naming 1 missing movies and 0 missing users, purged" in done.stdout
    user = await db.users.find_one({"username": fan["username"]})
    assert user["stats"]["count"] == 1 and user["stats"]["mean"] == 4.0
    done = await asyncio.to_thread(_run, settings, "api", "verify-summaries", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["integrity"]["orphan_ratings"] == 0


async def test_operators_disable_demote_and_delete_users_and_revoke_clients(settings, db, api):
    from core.services import tokens

    await api.user("boss", admin=True)
    await api.user("dora")

    def run(*args: str) -> subprocess.CompletedProcess:
        return _run(settings, "api", *args)

    done = await asyncio.to_thread(run, "user", "disable", "dora")
    assert done.returncode == 0 and "disabled: dora" in done.stdout, done.stderr
    assert (await db.users.find_one({"username": "dora"}))["disabled_at"] is not None
    assert "cli:" in done.stderr  # the audit line names who ran it
    done = await asyncio.to_thread(run, "user", "enable", "dora")
    assert (
        done.returncode == 0
        and (await db.users.find_one({"username": "dora"}))["disabled_at"] is None
    )
    done = await asyncio.to_thread(run, "user", "demote", "boss")
    assert done.returncode == 0 and "demoted: boss" in done.stdout
    assert (await db.users.find_one({"username": "boss"}))["role"] == "user"
    done = await asyncio.to_thread(run, "user", "delete", "dora")
    assert done.returncode == 0 and await db.users.count_documents({"username": "dora"}) == 0
    missing = await asyncio.to_thread(run, "user", "disable", "nobody")
    assert missing.returncode == 1 and "No user" in missing.stderr

    registered, _ = await tokens.create_client(name="nightly", scopes=["imports:write"])
    listed = await asyncio.to_thread(run, "client", "list")
    assert registered.client_id in listed.stdout and "active" in listed.stdout
    revoked = await asyncio.to_thread(run, "client", "revoke", registered.client_id)
    assert revoked.returncode == 0
    assert (await db.clients.find_one({"client_id": registered.client_id}))["revoked_at"]
    listed = await asyncio.to_thread(run, "client", "list")
    assert "revoked" in listed.stdout
