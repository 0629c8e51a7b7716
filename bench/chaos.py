"""Fault injection against the embedded stack (not a test): `make chaos`, `python -m bench.chaos`.

Starts `python -m embedded` (what `make run` runs) on a fresh data folder per scenario, sends
bursts of PUTs from 50 users, each write to its own (user, movie) pair so every acknowledged
one can be checked afterwards, and injects one fault mid-burst with real signals: kill -9 of
the worker, of redis-server or of the database (five rounds), SIGSTOP/SIGCONT of the database
or of the worker, a full disk under the database, a crash of the API between rating writes
and their enqueue, Ctrl-C of the whole stack and a restart on the same data. Import scenarios
run MovieLens imports through the API: two of one release at once, live ratings during one,
one whose queued message the broker lost. Then, with no further writes, it measures how long
until every movie summary (weighted score included) and user stat equals a recomputation
from the ratings. The tests (tests/test_faults.py) run the same scenarios, smaller. Only
loopback addresses; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from bson import ObjectId
from pymongo import MongoClient

from core import processes
from core.security import TokenService, generate_keyset
from core.settings import Settings
from core.stacks import URLS_FILE
from models import FINISHED, SCORES, RatingStats, bucket, utcnow

API = "/api/v1"
DB = "chaos"
ROOT = Path(__file__).resolve().parents[1]
SMALL = ROOT.parent / "shared" / "movielens" / "ml-latest-small"
# The stack's writes are refused under this much free space (DISK_FREE_FLOOR), and its
# database runs on a disk this small in the full-disk scenario.
FLOOR_MB = 16
SMALL_DISK_MB = 256


@dataclass
class Outcome:
    """One scenario's row of the table."""

    fault: str
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    lost: int = 0
    stored_unanswered: int = 0  # writes stored whose client never got an answer
    orphans: int = 0  # ratings naming a movie or a user that does not exist
    back_after: float | None = None  # seconds from the fault's end until work is taken again
    back_measured: bool = False
    exact_after: float | None = None  # seconds from recovery until exact; None: never (bound)
    wrong_left: int = 0

    def row(self) -> str:
        codes = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items(), key=str))
        exact = f"{self.exact_after:.1f}" if self.exact_after is not None else "NEVER"
        back = "" if not self.back_measured else (
            f"{self.back_after:.1f}" if self.back_after is not None else "NEVER"
        )  # fmt: skip
        return (
            f"| {self.fault} | {self.sent} | {codes} | {self.lost} | {self.stored_unanswered} "
            f"| {self.orphans} | {back} | {exact} |"
        )

    @property
    def bad(self) -> bool:
        """Lost or orphaned data, never exact, or not exact (or not back) within 30 s."""
        late = self.back_measured and (self.back_after is None or self.back_after > 30)
        never = self.exact_after is None or self.exact_after > 30
        return bool(self.lost or self.orphans or late or never)


def _children(pid: int) -> list[tuple[int, str]]:
    """(pid, command line) of the direct children of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == pid:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                found.append((int(entry.name), cmdline))
        except (OSError, ValueError, IndexError):
            continue
    return found


class SmallDisk:
    """A tmpfs of `mb` MiB on the database's folder: a real disk that fills up (ENOSPC).
    Mounting needs root; elsewhere `fill` caps the database process's file size instead
    (prlimit), the unprivileged stand-in, which its restart lifts."""

    BALLAST = "chaos-ballast"

    def __init__(self, path: Path, mb: int) -> None:
        self.path = path
        self.mb = mb
        self.mounted = False

    def mount(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if os.geteuid() != 0 or not shutil.which("mount"):
            return
        options = f"size={self.mb}m,mode=0700"
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(self.path)],
            capture_output=True,
            check=False,
        )
        self.mounted = done.returncode == 0

    def fill(self, pid: int | None) -> None:
        """No space left: a ballast file takes all of it (or the file size is capped)."""
        if not self.mounted:
            if pid is not None:
                size = sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
                subprocess.run(["prlimit", f"--pid={pid}", f"--fsize={size}"], check=False)
            return
        with open(self.path / self.BALLAST, "wb") as ballast:
            chunk = b"\0" * (1 << 20)
            try:
                while True:
                    ballast.write(chunk)
            except OSError:
                pass  # ENOSPC: the disk is full

    def free_up(self, pid: int | None) -> None:
        if not self.mounted:
            if pid is not None:
                subprocess.run(["prlimit", f"--pid={pid}", "--fsize=unlimited"], check=False)
            return
        (self.path / self.BALLAST).unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False


class ChaosStack:
    """`python -m embedded` on one data folder, with tokens we can mint for its users."""

    def __init__(self, work: Path, port: int | None = None, *, disk_mb: int | None = None) -> None:
        self.work = work
        self.disk = SmallDisk(work / "db", disk_mb) if disk_mb else None
        self.space_back_at: float | None = None
        self.port = port or processes.free_port()
        self.keyset = generate_keyset()
        keys = json.dumps(self.keyset.as_dict(private=True))
        self.env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"MONGODB_URL", "REDIS_URL"} and not k.startswith("COVERAGE_")
        }
        self.env.update(
            PORT=str(self.port),
            DATA_DIR=str(work),
            ENVIRONMENT="development",
            MONGODB_DB=DB,
            TOKEN_SIGNING_KEYS=keys,
            CELERY_QUEUE="chaos",
            LOG_LEVEL="INFO",
            DISK_FREE_FLOOR=str(FLOOR_MB * 1024**2),
            DISK_CHECK_INTERVAL="1",
            # C is looked at often, so its rewrites race the drains whenever it moves.
            WEIGHTED_REFRESH_INTERVAL="5",
            IMPORT_STALE_AFTER="10",
            IMPORT_SWEEP_INTERVAL="5",
        )
        self.tokens = TokenService(Settings(token_signing_keys=keys), self.keyset)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.mongo: MongoClient | None = None

    def start(self, timeout: float = 120) -> None:
        if self.disk is not None and not self.disk.mounted:
            self.disk.mount()
        log = open(self.work / "embedded.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "embedded"], env=self.env, stdout=log, stderr=log
        )
        processes.wait_until(self.ready, timeout=timeout, what="embedded stack", proc=self.proc)
        urls = json.loads((self.work / URLS_FILE).read_text())
        if self.mongo is not None:
            self.mongo.close()
        self.mongo = MongoClient(urls["mongodb_url"], tz_aware=True, serverSelectionTimeoutMS=3000)

    def stop(self, timeout: float = 90) -> None:
        """Ctrl-C, as a person at the terminal would; wait for the ordered stop."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGINT)  # the second Ctrl-C forces
                self.proc.wait(30)
        if self.mongo is not None:
            self.mongo.close()
            self.mongo = None

    def close(self) -> None:
        """Stop, and give back what start took (the small disk)."""
        self.stop()
        if self.disk is not None:
            self.disk.unmount()

    @property
    def db(self) -> Any:
        assert self.mongo is not None
        return self.mongo[DB]

    def pid(self, component: str) -> int | None:
        """The process id of a component of the running stack, by its command line."""
        assert self.proc is not None
        marks = {
            "worker": ("celery", " worker "),
            "beat": ("celery", " beat "),
            "redis": ("redis-server",),
            "database": ("secantusd",),
            "api": ("-m api serve",),
        }[component]
        for pid, cmdline in _children(self.proc.pid):
            if all(mark in cmdline for mark in marks):
                return pid
        return None

    def ready(self) -> bool:
        """/ready answers 200 and a worker runs."""
        try:
            with urlopen_loopback(f"{self.base}/ready") as resp:
                return resp.status == 200 and self.pid("worker") is not None
        except OSError:
            return False

    def users(self, n: int, *, role: str = "user") -> list[tuple[ObjectId, str]]:
        """Local users straight into MongoDB, each with an access token."""
        now = utcnow()
        docs = [
            {
                "username": f"chaos-{ObjectId()}",
                "email": None,
                "display_name": "chaos",
                "password_hash": None,
                "role": role,
                "external_ids": {},
                "stats": RatingStats().model_dump(),
                "created_at": now,
                "updated_at": now,
            }
            for _ in range(n)
        ]
        ids = self.db.users.insert_many(docs).inserted_ids
        scopes = ["ratings:write"] if role == "user" else ["imports:write"]
        return [(u, self.tokens.issue(subject=str(u), scopes=scopes)) for u in ids]

    def wrong(self, prior_votes: float = 10.0) -> int:
        """Movies and users whose stored summary differs from their ratings' recomputation,
        weighted scores (with the published C) included."""
        published = self.db.global_stats.find_one({"_id": "ratings"}) or {}
        wrong = 0
        for collection, key, field_name in (
            ("movies", "movie_id", "rating"),
            ("users", "user_id", "stats"),
        ):
            expected: dict[Any, list[int]] = {}
            rows = self.db.ratings.aggregate(
                [{"$group": {"_id": {"k": f"${key}", "s": "$score"}, "n": {"$sum": 1}}}]
            )
            for row in rows:
                histogram = expected.setdefault(row["_id"]["k"], [0] * len(SCORES))
                histogram[bucket(row["_id"]["s"])] = row["n"]
            for doc in self.db[collection].find({}, {field_name: 1}):
                summary = doc.get(field_name) or {}
                stored = summary.get("histogram") or [0] * len(SCORES)
                want = expected.get(doc["_id"], [0] * len(SCORES))
                if stored != want or (
                    collection == "movies"
                    and not _weighted_right(summary, want, prior_votes, published.get("mean"))
                ):
                    wrong += 1
        return wrong

    def caught_up(self) -> bool:
        """Whether the drains have taken every rating write and intent, and no import holds
        its lease (cheap: index walks from the drain's mark)."""
        mark = self.db.drain_marks.find_one({"_id": "ratings"}) or {}
        since = mark.get("drained_before") or datetime(1970, 1, 1, tzinfo=UTC)
        return (
            self.db.ratings.find_one({"changed_at": {"$gte": since}}, {"_id": 1}) is None
            and self.db.summary_intents.find_one({}, {"_id": 1}) is None
            and self.db.leases.find_one({"expires_at": {"$gt": utcnow()}}) is None
        )

    def orphans(self) -> int:
        """Ratings that name a movie or a user that does not exist."""
        found = 0
        for key, collection in (("movie_id", "movies"), ("user_id", "users")):
            named = self.db.ratings.distinct(key)
            existing = {d["_id"] for d in self.db[collection].find({}, {"_id": 1})}
            missing = [i for i in named if i not in existing]
            if missing:
                found += self.db.ratings.count_documents({key: {"$in": missing}})
        return found

    async def post_import(self, path: str, token: str) -> tuple[int, str | None]:
        """POST /imports for a folder under DATA_DIR/imports; (status, job id)."""
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.post(
                f"{self.base}{API}/imports",
                json={"source": "movielens", "path": path},
                headers={"Authorization": f"Bearer {token}"},
            ) as resp,
        ):
            body = await resp.json()
            return resp.status, body.get("id")

    def jobs(self, ids: list[str]) -> dict[str, str]:
        """Each job's status."""
        docs = self.db.import_jobs.find({"_id": {"$in": [ObjectId(i) for i in ids]}})
        return {str(d["_id"]): d["status"] for d in docs}


def _weighted_right(
    summary: dict[str, Any], histogram: list[int], prior_votes: float, mean: float | None
) -> bool:
    """The stored weighted score is the one its ratings give with the published C."""
    from core.summaries import weighted_score

    stats = RatingStats.from_histogram(histogram)
    want = weighted_score(
        count=stats.count, mean=stats.mean, prior_votes=prior_votes, prior_mean=mean
    )
    have = summary.get("weighted")
    if want is None or have is None:
        return want is have
    return abs(have - want) <= 1e-9 * max(1.0, abs(want))


def urlopen_loopback(url: str, timeout: float = 2.0) -> Any:
    """urllib for our own loopback listener only."""
    import urllib.request

    assert url.startswith("http://127.0.0.1:"), url
    return urllib.request.urlopen(url, timeout=timeout)


async def burst(
    stack: ChaosStack,
    writes: list[tuple[str, str, float]],
    outcome: Outcome,
    acked: list[tuple[str, str, float]],
    *,
    fault_after: int,
    fault_due: asyncio.Event,
    concurrency: int = 16,
    gap: float = 0.0,
) -> None:
    """PUT every (token, movie, score), each sender resting `gap` s after each write; sets
    `fault_due` once `fault_after` were sent."""
    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=15)
    async with aiohttp.ClientSession(timeout=timeout) as session:

        async def one(token: str, movie: str, score: float) -> None:
            async with limit:
                outcome.sent += 1
                if outcome.sent >= fault_after:
                    fault_due.set()
                try:
                    async with session.put(
                        f"{stack.base}{API}/movies/{movie}/rating",
                        json={"score": score},
                        headers={"Authorization": f"Bearer {token}"},
                    ) as resp:
                        await resp.read()
                        outcome.statuses[resp.status] += 1
                        if resp.status in (200, 201):
                            acked.append((token, movie, score))
                except (aiohttp.ClientError, TimeoutError):
                    outcome.statuses["conn-error"] += 1
                    await asyncio.sleep(0.2)  # a refused connection fails at once
                await asyncio.sleep(gap)

        await asyncio.gather(*(one(*w) for w in writes))


def _signal(pid: int | None, signum: int) -> None:
    if pid is not None:
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass


def kill_worker(stack: ChaosStack) -> None:
    _signal(stack.pid("worker"), signal.SIGKILL)


def kill_redis(stack: ChaosStack) -> None:
    _signal(stack.pid("redis"), signal.SIGKILL)


def kill_database(stack: ChaosStack) -> None:
    _signal(stack.pid("database"), signal.SIGKILL)


def stall_database(stack: ChaosStack, seconds: float = 10.0) -> None:
    pid = stack.pid("database")
    _signal(pid, signal.SIGSTOP)
    time.sleep(seconds)
    _signal(pid, signal.SIGCONT)


def stall_worker(stack: ChaosStack, seconds: float = 60.0) -> None:
    """SIGSTOP the worker and its children (its own process group) for `seconds`."""
    pid = stack.pid("worker")
    if pid is None:
        return
    os.killpg(pid, signal.SIGSTOP)
    time.sleep(seconds)
    os.killpg(pid, signal.SIGCONT)


def fill_disk(stack: ChaosStack, seconds: float = 10.0) -> None:
    """No space left on the database's disk for `seconds`, then room again."""
    assert stack.disk is not None, "the full-disk scenario needs ChaosStack(disk_mb=...)"
    stack.disk.fill(stack.pid("database"))
    time.sleep(seconds)
    stack.disk.free_up(stack.pid("database"))
    stack.space_back_at = time.monotonic()


def crash_between_write_and_enqueue(stack: ChaosStack) -> None:
    """Freeze Redis so PUTs stall after their database write, then kill -9 the API."""
    redis_pid = stack.pid("redis")
    _signal(redis_pid, signal.SIGSTOP)
    time.sleep(1.0)
    _signal(stack.pid("api"), signal.SIGKILL)
    _signal(redis_pid, signal.SIGCONT)


def interrupt_and_restart(stack: ChaosStack) -> None:
    stack.stop()
    stack.start()


SCENARIOS: dict[str, Callable[[ChaosStack], None]] = {
    "kill -9 worker": kill_worker,
    "kill -9 redis-server": kill_redis,
    "kill -9 database": kill_database,
    "SIGSTOP database 10 s": stall_database,
    "SIGSTOP worker 60 s": stall_worker,
    "full disk 10 s": fill_disk,
    "crash between write and enqueue": crash_between_write_and_enqueue,
    "Ctrl-C mid-burst, restart": interrupt_and_restart,
}
# Faults repeated on one stack, a burst each (the database killed at five moments).
ROUNDS = {"kill -9 database": 5}
# Faults that need a stack of their own kind: a database on a disk that can fill up.
DISK_MB = {"full disk 10 s": SMALL_DISK_MB}
# Bursts spread out in time (seconds each sender rests between writes), so that writes keep
# coming before, during and after the fault.
GAP = {"full disk 10 s": 1.0}


async def run_scenario(
    stack: ChaosStack,
    fault: str,
    *,
    users: int,
    writes: int,
    bound: float = 60.0,
    rounds: int | None = None,
) -> Outcome:
    """Bursts with `fault` injected a third of the way into each; then measure recovery."""
    outcome = Outcome(fault)
    movies = [str(d["_id"]) for d in stack.db.movies.find({}, {"_id": 1})]
    rounds = rounds or ROUNDS.get(fault, 1)
    people = stack.users(users)
    pairs = [(token, movie) for _, token in people for movie in movies]
    random.Random(len(pairs)).shuffle(pairs)
    rng = random.Random(7)
    planned = [(token, movie, rng.choice(SCORES)) for token, movie in pairs[: writes * rounds]]
    acked: list[tuple[str, str, float]] = []
    for start in range(0, len(planned), writes):
        fault_due = asyncio.Event()
        sending = asyncio.create_task(
            burst(
                stack, planned[start : start + writes], outcome, acked,
                fault_after=outcome.sent + writes // 3, fault_due=fault_due,
                gap=GAP.get(fault, 0.0),
            )
        )  # fmt: skip
        await fault_due.wait()
        await asyncio.to_thread(SCENARIOS[fault], stack)
        await sending
        await asyncio.to_thread(
            processes.wait_until, stack.ready, timeout=120, what="recovery", proc=stack.proc
        )
    if stack.space_back_at is not None:
        outcome.back_measured = True
        outcome.back_after = await writes_again(stack, people[0][1], movies, bound=bound)
    # Recovered: every part is back (ready, with a worker). The clock starts here.
    recovered = time.monotonic()
    await exact_within(stack, outcome, recovered, bound)
    outcome.lost, outcome.stored_unanswered = await asyncio.to_thread(
        _tally, stack, people, planned, acked
    )
    outcome.orphans = await asyncio.to_thread(stack.orphans)
    return outcome


async def exact_within(stack: ChaosStack, outcome: Outcome, since: float, bound: float) -> None:
    """Poll until every summary is exact (or `bound` s pass); note how long it took. The
    full comparison reads every rating (seconds of a database that runs one command at a
    time), so it runs only once the drains say they are caught up: polling it back to back
    would take the database from the drains it measures."""
    while time.monotonic() - since < bound:
        if await asyncio.to_thread(stack.caught_up):
            wrong = await asyncio.to_thread(stack.wrong)
            if wrong == 0:
                outcome.exact_after = time.monotonic() - since
                return
            outcome.wrong_left = wrong
        await asyncio.sleep(0.5)
    outcome.wrong_left = await asyncio.to_thread(stack.wrong)


async def writes_again(
    stack: ChaosStack, token: str, movies: list[str], *, bound: float
) -> float | None:
    """Seconds from the disk having room again until a PUT is accepted (None: not in bound)."""
    assert stack.space_back_at is not None
    timeout = aiohttp.ClientTimeout(total=5)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() - stack.space_back_at < bound:
            try:
                async with session.put(
                    f"{stack.base}{API}/movies/{movies[0]}/rating",
                    json={"score": 3.0},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    if resp.status in (200, 201):
                        return time.monotonic() - stack.space_back_at
            except (aiohttp.ClientError, TimeoutError):
                pass
            await asyncio.sleep(0.25)
    return None


def _tally(
    stack: ChaosStack,
    people: list[tuple[ObjectId, str]],
    planned: list[tuple[str, str, float]],
    acked: list[tuple[str, str, float]],
) -> tuple[int, int]:
    """(acknowledged writes not stored with their score, stored writes never acknowledged)."""
    user_of = {token: user for user, token in people}
    answered = set(acked)
    lost = stored = 0
    for token, movie, score in planned:
        doc = stack.db.ratings.find_one({"user_id": user_of[token], "movie_id": ObjectId(movie)})
        kept = doc is not None and doc["score"] == score
        if (token, movie, score) in answered:
            lost += not kept
        else:
            stored += kept
    return lost, stored


# ---- imports under faults -------------------------------------------------------------------


@dataclass
class Release:
    """A MovieLens release copied into the stack's import folder."""

    name: str  # its folder under DATA_DIR/imports
    ratings: int  # rows of ratings.csv (one per user and movie)


def place_release(stack: ChaosStack, source: Path | None, *, synth_ratings: int = 3000) -> Release:
    """Copy `source` into DATA_DIR/imports (a link would be refused), or write a synthetic
    release there when there is none."""
    imports = stack.work / "imports"
    imports.mkdir(exist_ok=True)
    target = imports / "release"
    if source is not None:
        shutil.copytree(source, target)
    else:
        from seed.synth import generate

        generate(target, ratings=synth_ratings, users=60, movies=300, seed=11)
    with (target / "ratings.csv").open() as rows:
        count = sum(1 for _ in rows) - 1
    return Release("release", count)


async def wait_jobs(stack: ChaosStack, ids: list[str], *, bound: float) -> dict[str, str]:
    """Every job's status once all have ended (or at `bound` s)."""
    deadline = time.monotonic() + bound
    while True:
        statuses = await asyncio.to_thread(stack.jobs, ids)
        if all(s in FINISHED for s in statuses.values()) or time.monotonic() > deadline:
            return statuses
        await asyncio.sleep(1.0)


async def _imported_exact(
    stack: ChaosStack, outcome: Outcome, release: Release, *, since: float, bound: float
) -> None:
    """The release's ratings all stored once, no orphan, every summary exact."""
    await exact_within(stack, outcome, since, bound)
    movielens_users = [
        d["_id"] for d in stack.db.users.find({"external_ids.movielens": {"$ne": None}}, {"_id": 1})
    ]
    stored = stack.db.ratings.count_documents({"user_id": {"$in": movielens_users}})
    outcome.lost += abs(release.ratings - stored)
    outcome.orphans = await asyncio.to_thread(stack.orphans)


async def two_imports_at_once(
    stack: ChaosStack, release: Release, *, bound: float, **_: Any
) -> Outcome:
    """Two POST /imports of one release, no Idempotency-Key, sent together."""
    outcome = Outcome("two imports of one release at once")
    [(_admin, token)] = stack.users(1, role="admin")
    posted = await asyncio.gather(*(stack.post_import(release.name, token) for _ in range(2)))
    outcome.sent = 2
    ids = [job for status, job in posted if status == 202 and job]
    statuses = await wait_jobs(stack, ids, bound=bound * 20)
    outcome.statuses.update(f"job {s}" for s in statuses.values())
    await _imported_exact(stack, outcome, release, since=time.monotonic(), bound=bound)
    return outcome


async def live_ratings_during_import(
    stack: ChaosStack, release: Release, *, bound: float, users: int = 50, writes: int = 300
) -> Outcome:
    """PUT bursts into the catalogue while an import writes it; exact after the last write."""
    outcome = Outcome("live ratings during an import")
    [(_admin, token)] = stack.users(1, role="admin")
    status, job = await stack.post_import(release.name, token)
    assert status == 202 and job, status
    people = stack.users(users)
    acked: list[tuple[str, str, float]] = []
    planned: list[tuple[str, str, float]] = []
    rng = random.Random(5)
    used: set[tuple[str, str]] = set()
    deadline = time.monotonic() + bound * 20
    while (await asyncio.to_thread(stack.jobs, [job]))[job] not in FINISHED:
        if time.monotonic() > deadline:
            break
        movies = [str(d["_id"]) for d in stack.db.movies.find({}, {"_id": 1}).limit(2000)]
        batch = []
        for _ in range(writes):
            pair = (rng.choice(people)[1], rng.choice(movies))
            if pair not in used:
                used.add(pair)
                batch.append((*pair, rng.choice(SCORES)))
        planned += batch
        await burst(stack, batch, outcome, acked, fault_after=len(batch) + 1,
                    fault_due=asyncio.Event())  # fmt: skip
        await asyncio.sleep(2.0)
    last_write = time.monotonic()
    statuses = await wait_jobs(stack, [job], bound=bound * 20)
    outcome.statuses.update(f"job {s}" for s in statuses.values())
    await _imported_exact(stack, outcome, release, since=last_write, bound=bound)
    lost, outcome.stored_unanswered = await asyncio.to_thread(_tally, stack, people, planned, acked)
    outcome.lost += lost
    return outcome


async def lost_queued_message(
    stack: ChaosStack, release: Release, *, bound: float, **_: Any
) -> Outcome:
    """The worker is stopped when the job is accepted, then the broker is flushed: the job's
    only message is gone. Beat's sweep must send it again."""
    import redis

    outcome = Outcome("queued import whose message is lost")
    [(_admin, token)] = stack.users(1, role="admin")
    worker = stack.pid("worker")
    assert worker is not None
    os.killpg(worker, signal.SIGSTOP)
    try:
        status, job = await stack.post_import(release.name, token)
        assert status == 202 and job, status
        urls = json.loads((stack.work / URLS_FILE).read_text())
        redis.Redis.from_url(urls["redis_url"]).flushall()
    finally:
        os.killpg(worker, signal.SIGCONT)
    outcome.sent = 1
    flushed = time.monotonic()
    outcome.back_measured = True
    while time.monotonic() - flushed < bound * 2:
        if (await asyncio.to_thread(stack.jobs, [job]))[job] != "queued":
            outcome.back_after = time.monotonic() - flushed
            break
        await asyncio.sleep(0.5)
    statuses = await wait_jobs(stack, [job], bound=bound * 20)
    outcome.statuses.update(f"job {s}" for s in statuses.values())
    await _imported_exact(stack, outcome, release, since=time.monotonic(), bound=bound)
    return outcome


IMPORT_SCENARIOS = {
    "two imports of one release at once": two_imports_at_once,
    "live ratings during an import": live_ratings_during_import,
    "queued import whose message is lost": lost_queued_message,
}


def table(outcomes: list[Outcome]) -> str:
    head = [
        "| fault | writes sent | status codes seen | acknowledged writes lost "
        "| stored, never answered | orphan ratings | s until back | s until exact |",
        "|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + [o.row() for o in outcomes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--writes", type=int, default=300, help="PUTs per scenario")
    parser.add_argument(
        "--movielens", type=Path, default=SMALL if SMALL.exists() else None,
        help="the release the import scenarios use (default: ml-latest-small beside the "
        "project; a synthetic one where there is none)",
    )  # fmt: skip
    every = [*SCENARIOS, *IMPORT_SCENARIOS]
    parser.add_argument("--only", action="append", choices=every, help="repeatable")
    args = parser.parse_args(argv)
    outcomes = []
    for fault in args.only or every:
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            stack = ChaosStack(Path(tmp), disk_mb=DISK_MB.get(fault))
            print(f"{fault} …", file=sys.stderr, flush=True)
            try:
                stack.start()
                if fault in SCENARIOS:
                    run = run_scenario(stack, fault, users=args.users, writes=args.writes)
                else:
                    release = place_release(stack, args.movielens)
                    run = IMPORT_SCENARIOS[fault](stack, release, bound=60.0)
                outcomes.append(asyncio.run(run))
            finally:
                stack.close()
    print(table(outcomes))
    return 1 if any(o.bad for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
