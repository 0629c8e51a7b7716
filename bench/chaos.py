"""Fault injection against the embedded stack (not a test): `make chaos`, `python -m bench.chaos`.

Starts `python -m embedded` (what `make run` runs) on a fresh data folder, sends bursts of
PUTs from 50 users, each write to its own (user, movie) pair so every acknowledged one can be
checked afterwards, and injects one fault mid-burst with real signals: kill -9 of the worker
or of redis-server (the stack restarts them), SIGSTOP/SIGCONT of the database, a crash of the
API between rating writes and their enqueue, Ctrl-C of the whole stack and a restart on the
same data. Then, with no further writes, it measures how long until every movie summary and
user stat equals a recomputation from the ratings. The tests (tests/test_faults.py) run the
same scenarios, smaller. Only loopback addresses; every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from bson import ObjectId
from pymongo import MongoClient

from core import processes
from core.security import TokenService, generate_keyset
from core.settings import EMBEDDED_FILE, Settings
from models import SCORES, RatingStats, bucket, utcnow

API = "/api/v1"
DB = "chaos"


@dataclass
class Outcome:
    """One scenario's row of the table."""

    fault: str
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    lost: int = 0
    stored_unanswered: int = 0  # writes stored whose client never got an answer
    exact_after: float | None = None  # seconds from recovery until exact; None: never (bound)
    wrong_left: int = 0

    def row(self) -> str:
        codes = " ".join(f"{k}:{v}" for k, v in sorted(self.statuses.items(), key=str))
        exact = f"{self.exact_after:.1f}" if self.exact_after is not None else "NEVER"
        return (
            f"| {self.fault} | {self.sent} | {codes} | {self.lost} | {self.stored_unanswered} "
            f"| {exact} |"
        )


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


class ChaosStack:
    """`python -m embedded` on one data folder, with tokens we can mint for its users."""

    def __init__(self, work: Path, port: int | None = None) -> None:
        self.work = work
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
        )
        self.tokens = TokenService(Settings(token_signing_keys=keys), self.keyset)
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None
        self.mongo: MongoClient | None = None

    def start(self, timeout: float = 120) -> None:
        log = open(self.work / "embedded.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "embedded"], env=self.env, stdout=log, stderr=log
        )
        processes.wait_until(self.ready, timeout=timeout, what="embedded stack", proc=self.proc)
        urls = json.loads((self.work / EMBEDDED_FILE).read_text())
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

    def users(self, n: int) -> list[tuple[ObjectId, str]]:
        """Local users straight into MongoDB, each with an access token."""
        now = utcnow()
        docs = [
            {
                "username": f"chaos-{ObjectId()}",
                "email": None,
                "display_name": "chaos",
                "password_hash": None,
                "role": "user",
                "external_ids": {},
                "stats": RatingStats().model_dump(),
                "created_at": now,
                "updated_at": now,
            }
            for _ in range(n)
        ]
        ids = self.db.users.insert_many(docs).inserted_ids
        return [(u, self.tokens.issue(subject=str(u), scopes=["ratings:write"])) for u in ids]

    def wrong(self) -> int:
        """Movies and users whose stored summary differs from their ratings' recomputation."""
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
            for doc in self.db[collection].find({}, {f"{field_name}.histogram": 1}):
                stored = (doc.get(field_name) or {}).get("histogram") or [0] * len(SCORES)
                if stored != expected.get(doc["_id"], [0] * len(SCORES)):
                    wrong += 1
        return wrong


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
) -> None:
    """PUT every (token, movie, score); sets `fault_due` once `fault_after` were sent."""
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


def stall_database(stack: ChaosStack, seconds: float = 10.0) -> None:
    pid = stack.pid("database")
    _signal(pid, signal.SIGSTOP)
    time.sleep(seconds)
    _signal(pid, signal.SIGCONT)


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
    "SIGSTOP database 10 s": stall_database,
    "crash between write and enqueue": crash_between_write_and_enqueue,
    "Ctrl-C mid-burst, restart": interrupt_and_restart,
}


async def run_scenario(
    stack: ChaosStack, fault: str, *, users: int, writes: int, bound: float = 60.0
) -> Outcome:
    """One burst with `fault` injected a third of the way in; then measure recovery."""
    outcome = Outcome(fault)
    movies = [str(d["_id"]) for d in stack.db.movies.find({}, {"_id": 1})]
    people = stack.users(users)
    pairs = [(token, movie) for _, token in people for movie in movies]
    random.Random(len(pairs)).shuffle(pairs)
    rng = random.Random(7)
    planned = [(token, movie, rng.choice(SCORES)) for token, movie in pairs[:writes]]
    acked: list[tuple[str, str, float]] = []
    fault_due = asyncio.Event()
    sending = asyncio.create_task(
        burst(stack, planned, outcome, acked, fault_after=writes // 3, fault_due=fault_due)
    )
    await fault_due.wait()
    await asyncio.to_thread(SCENARIOS[fault], stack)
    await sending
    # Recovered: every part is back (ready, with a worker). The clock starts here.
    await asyncio.to_thread(
        processes.wait_until, stack.ready, timeout=120, what="recovery", proc=stack.proc
    )
    recovered = time.monotonic()
    while time.monotonic() - recovered < bound:
        wrong = await asyncio.to_thread(stack.wrong)
        if wrong == 0:
            outcome.exact_after = time.monotonic() - recovered
            break
        outcome.wrong_left = wrong
        await asyncio.sleep(0.5)
    outcome.lost, outcome.stored_unanswered = await asyncio.to_thread(
        _tally, stack, people, planned, acked
    )
    return outcome


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


def table(outcomes: list[Outcome]) -> str:
    head = [
        "| fault | writes sent | status codes seen | acknowledged writes lost "
        "| stored, never answered | s until exact |",
        "|---|---|---|---|---|---|",
    ]
    return "\n".join(head + [o.row() for o in outcomes])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--writes", type=int, default=300, help="PUTs per scenario")
    parser.add_argument("--only", action="append", choices=list(SCENARIOS), help="repeatable")
    args = parser.parse_args(argv)
    outcomes = []
    for fault in args.only or list(SCENARIOS):
        with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
            stack = ChaosStack(Path(tmp))
            print(f"{fault} …", file=sys.stderr, flush=True)
            stack.start()
            try:
                outcomes.append(
                    asyncio.run(run_scenario(stack, fault, users=args.users, writes=args.writes))
                )
            finally:
                stack.stop()
    print(table(outcomes))
    bad = [o for o in outcomes if o.lost or o.exact_after is None or o.exact_after > 30]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
