"""Floods against the embedded stack holding ml-latest-small (not a test): `make abuse`.

Starts `python -m embedded` (what `make run` runs, default settings) on a fresh data folder,
seeds ml-latest-small, signs a person up and logs them in, then runs one flood at a time
from many loopback addresses while that person keeps reading (their profile, their ratings,
movies) a few times a second. One table: attack, requests sent, answers by status, the
person's p50/p90/max and failed reads during it, API RSS before and after, and connections
still open once the flood ended. Targets: the person's reads all 200 with p90 <= 250 ms;
floods answered 429/503 past their budget; 19,000 URL spellings grow RSS by <= 50 MiB;
half-sent requests closed within the header timeout while /health answers. Exits 1 when a
row misses one. Only loopback addresses; every loop is bounded in count and time.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from bench.chaos import API, SMALL, ChaosStack, urlopen_loopback

P90_TARGET_MS = 250.0
RSS_TARGET_MIB = 50.0
SPELLINGS = 19_000
HEADER_TIMEOUT = 10.0  # the stack's HTTP_HEADER_TIMEOUT default
GENRES = ["Drama", "Comedy", "Thriller", "Action", "Romance", "Adventure", "Crime", "Horror"]


def loopback(block: int, n: int) -> list[str]:
    """`n` loopback addresses of their own block, none of them 127.0.0.1 (the person's)."""
    return [f"127.{block}.{i // 250}.{i % 250 + 2}" for i in range(n)]


@dataclass
class Row:
    attack: str
    sent: int = 0
    statuses: Counter = field(default_factory=Counter)
    person_ms: list[float] = field(default_factory=list)
    person_errors: int = 0
    rss_before: float = 0.0
    rss_after: float = 0.0
    left_open: int = 0
    health_failures: int = 0
    checks: list[str] = field(default_factory=list)  # targets missed

    def percentile(self, p: float) -> float:
        if not self.person_ms:
            return float("nan")
        ordered = sorted(self.person_ms)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))]


class Abuse:
    """The stack, the person, and one flood at a time."""

    def __init__(self, stack: ChaosStack) -> None:
        self.stack = stack
        self.port = stack.port
        self.token = ""
        self.username = f"person{random.randrange(10**6)}"
        self.password = "a long enough passphrase"
        self.movies: list[str] = []

    # ---- measurement ----

    def rss_mib(self) -> float:
        """The API process's resident memory (the stack runs one, WEB_CONCURRENCY=1)."""
        total = 0
        for pid in filter(None, [self.stack.pid("api")]):
            try:
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                continue
        return total / 1024

    def open_connections(self) -> int:
        """Established TCP connections to the API's port, counted on the server's side."""
        port = f"{self.port:04X}"
        count = 0
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            try:
                lines = Path(table).read_text().splitlines()[1:]
            except OSError:
                continue
            for line in lines:
                parts = line.split()
                if parts[1].endswith(f":{port}") and parts[3] == "01":
                    count += 1
        return count

    async def person(self, row: Row, stop: asyncio.Event) -> None:
        """The logged-in person's reads, one every 100 ms, until `stop`."""
        headers = {"Authorization": f"Bearer {self.token}"}
        paths = [f"{API}/users/me", f"{API}/users/me/ratings?limit=20"]
        timeout = aiohttp.ClientTimeout(total=30)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            for i in range(10_000):
                if stop.is_set():
                    break
                path = paths[i % 3] if i % 3 < 2 else f"{API}/movies/{random.choice(self.movies)}"
                started = time.perf_counter()
                try:
                    async with session.get(self.base + path, headers=headers) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except (aiohttp.ClientError, TimeoutError):
                    ok = False
                row.person_ms.append((time.perf_counter() - started) * 1000)
                row.person_errors += not ok
                await asyncio.sleep(0.1)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # ---- set-up ----

    async def sign_up(self) -> None:
        async with aiohttp.ClientSession() as session:
            async with session.post(
                f"{self.base}{API}/users",
                json={
                    "username": self.username,
                    "email": f"{self.username}@example.com",
                    "password": self.password,
                    "display_name": "P",
                },
            ) as resp:
                assert resp.status == 201, await resp.text()
            self.token = await self.log_in(session)
            headers = {"Authorization": f"Bearer {self.token}"}
            async with session.get(
                f"{self.base}{API}/movies?sort=-votes&limit=100", headers=headers
            ) as resp:
                self.movies = [m["id"] for m in (await resp.json())["items"]]
            for movie in self.movies[:30]:
                async with session.put(
                    f"{self.base}{API}/movies/{movie}/rating", json={"score": 4.0}, headers=headers
                ) as resp:
                    assert resp.status in (200, 201), await resp.text()

    async def log_in(self, session: aiohttp.ClientSession) -> str:
        async with session.post(
            f"{self.base}{API}/auth/token",
            data={"grant_type": "password", "username": self.username, "password": self.password},
        ) as resp:
            assert resp.status == 200, await resp.text()
            return str((await resp.json())["access_token"])

    # ---- floods ----

    async def flood(
        self,
        attack: str,
        request: Callable[[aiohttp.ClientSession, int], Awaitable[int]],
        *,
        total: int,
        concurrency: int,
        addresses: list[str],
        seconds: float,
    ) -> Row:
        """`total` requests (or `seconds`), `concurrency` at once spread over `addresses`,
        while the person reads."""
        row = Row(attack, rss_before=self.rss_mib())
        stop = asyncio.Event()
        reader = asyncio.create_task(self.person(row, stop))
        counter = iter(range(total))
        deadline = time.monotonic() + seconds
        timeout = aiohttp.ClientTimeout(total=30)

        async def sender(mine: list[str]) -> None:
            """Requests from each of `mine` in turn, a connection per address."""
            sessions = {
                address: aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(local_addr=(address, 0), limit=1),
                    timeout=timeout,
                )
                for address in mine
            }
            try:
                for i in counter:
                    if time.monotonic() > deadline:
                        break
                    row.sent += 1
                    try:
                        row.statuses[await request(sessions[mine[i % len(mine)]], i)] += 1
                    except (aiohttp.ClientError, TimeoutError):
                        row.statuses["conn-error"] += 1
            finally:
                for session in sessions.values():
                    await session.close()

        shares = [
            addresses[k::concurrency] or [addresses[k % len(addresses)]] for k in range(concurrency)
        ]
        await asyncio.gather(*(sender(mine) for mine in shares))
        stop.set()
        await reader
        await asyncio.sleep(1)
        row.rss_after = self.rss_mib()
        row.left_open = self.open_connections()
        return row

    async def get(self, session: aiohttp.ClientSession, path: str) -> int:
        async with session.get(self.base + path) as resp:
            await resp.read()
            return resp.status

    async def filtered_lists(self) -> Row:
        def path(i: int) -> str:
            genre, limit, offset = random.choice(GENRES), random.randint(1, 100), i % 1000
            sort = "-year" if i % 2 else "-weighted"  # the first is served by no index
            return f"{API}/movies?genre={genre}&sort={sort}&limit={limit}&offset={offset}"

        return await self.flood(
            "filtered lists, a new key each (24 at once)",
            lambda s, i: self.get(s, path(i)),
            total=200_000, concurrency=24, addresses=loopback(1, 24), seconds=15,
        )  # fmt: skip

    async def short_searches(self) -> Row:
        prefixes = ["th", "the", "sta", "lov", "man", "day", "and", "war", "all", "her"]

        def path(i: int) -> str:
            return f"{API}/movies?q={random.choice(prefixes)}&limit={random.randint(1, 100)}"

        return await self.flood(
            "short search prefixes (24 at once)",
            lambda s, i: self.get(s, path(i)),
            total=200_000, concurrency=24, addresses=loopback(2, 24), seconds=15,
        )  # fmt: skip

    async def cheap_reads(self) -> Row:
        return await self.flood(
            "reads by id from 200 addresses (48 at once)",
            lambda s, i: self.get(s, f"{API}/movies/{self.movies[i % len(self.movies)]}"),
            total=200_000, concurrency=48, addresses=loopback(3, 200), seconds=15,
        )  # fmt: skip

    async def spellings(self) -> Row:
        """One request, `SPELLINGS` ways: zeros before `limit` and `offset`, either order."""

        def path(i: int) -> str:
            limit = "0" * (i % 190) + "100"
            offset = "0" * (1 + i // 190 % 50)
            parts = [f"limit={limit}", "sort=-votes", f"offset={offset}"]
            if i // 9500:
                parts.reverse()
            return f"{API}/movies?{'&'.join(parts)}"

        return await self.flood(
            f"{SPELLINGS:,} spellings of one list",
            lambda s, i: self.get(s, path(i)),
            total=SPELLINGS, concurrency=8, addresses=loopback(4, 64), seconds=120,
        )  # fmt: skip

    async def sign_ups(self) -> Row:
        async def one(session: aiohttp.ClientSession, i: int) -> int:
            name = f"flood{random.randrange(10**9)}"
            body = {
                "username": name,
                "email": f"{name}@example.com",
                "password": "a long enough password",
                "display_name": "F",
            }
            async with session.post(f"{self.base}{API}/users", json=body) as resp:
                await resp.read()
                return resp.status

        return await self.flood(
            "80 sign-ups from one address (40 at once)",
            one, total=80, concurrency=40, addresses=["127.5.0.2"], seconds=60,
        )  # fmt: skip

    async def guesses(self) -> Row:
        async def one(session: aiohttp.ClientSession, i: int) -> int:
            form = {"grant_type": "password", "username": self.username, "password": f"g{i}"}
            async with session.post(f"{self.base}{API}/auth/token", data=form) as resp:
                await resp.read()
                return resp.status

        row = await self.flood(
            "password guesses from 20 addresses (20 at once)",
            one, total=200_000, concurrency=20, addresses=loopback(6, 20), seconds=15,
        )  # fmt: skip
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            try:
                await self.log_in(session)
                row.person_ms.append((time.perf_counter() - started) * 1000)
            except AssertionError:
                row.person_errors += 1
                row.checks.append("the owner could not log in after the guesses")
        return row

    async def half_sent(self, connections: int = 3_000) -> Row:
        """Connections that send half a request head and wait; /health on new connections."""
        row = Row(f"{connections:,} half-sent request heads", rss_before=self.rss_mib())
        stop = asyncio.Event()
        reader = asyncio.create_task(self.person(row, stop))
        addresses = loopback(7, 100)
        writers: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        for i in range(connections):
            try:
                r, w = await asyncio.open_connection(
                    "127.0.0.1", self.port, local_addr=(addresses[i % len(addresses)], 0)
                )
            except OSError:
                row.statuses["conn-error"] += 1
                continue
            w.write(b"GET /api/v1/genres HTTP/1.1\r\nHost: x\r\n")
            writers.append((r, w))
            row.sent += 1
        opened = time.monotonic()
        health_deadline = opened + HEADER_TIMEOUT + 3
        while time.monotonic() < health_deadline:
            try:
                with urlopen_loopback(f"{self.base}/health", timeout=2) as resp:
                    if resp.status != 200:
                        row.health_failures += 1
            except OSError:
                row.health_failures += 1
            await asyncio.sleep(0.5)

        async def closed(reader: asyncio.StreamReader) -> bool:
            try:
                await asyncio.wait_for(reader.read(), 0.05)
            except (TimeoutError, OSError):
                return False
            return True

        results = await asyncio.gather(*(closed(r) for r, _ in writers))
        row.statuses["closed by server"] = sum(results)
        row.left_open = len(results) - sum(results)
        for _, w in writers:
            w.close()
        stop.set()
        await reader
        row.rss_after = self.rss_mib()
        return row


def judge(row: Row, *, rss_bound: bool = False) -> None:
    """Note every target the row misses."""
    if row.person_errors:
        row.checks.append(f"{row.person_errors} of the person's reads failed")
    if row.percentile(0.9) > P90_TARGET_MS:
        row.checks.append(f"person p90 {row.percentile(0.9):.0f} ms > {P90_TARGET_MS:.0f}")
    if rss_bound and row.rss_after - row.rss_before > RSS_TARGET_MIB:
        row.checks.append(f"RSS grew {row.rss_after - row.rss_before:.0f} MiB")
    if row.health_failures:
        row.checks.append(f"/health failed {row.health_failures} times")
    if row.left_open:
        row.checks.append(f"{row.left_open} connections left open")
    if row.statuses.get(500):
        row.checks.append("500 answers")


def table(rows: list[Row]) -> str:
    head = (
        f"{'attack':<48}{'sent':>7}  {'answers':<40}{'p50':>7}{'p90':>7}{'max':>7}{'err':>5}"
        f"{'RSS MiB':>14}{'open':>6}  target"
    )
    lines = [head, "-" * len(head)]
    for row in rows:
        answers = " ".join(f"{k}:{v}" for k, v in sorted(row.statuses.items(), key=str))
        rss = f"{row.rss_before:.0f}->{row.rss_after:.0f}"
        lines.append(
            f"{row.attack:<48}{row.sent:>7}  {answers:<40}{row.percentile(0.5):>7.0f}"
            f"{row.percentile(0.9):>7.0f}{max(row.person_ms, default=0):>7.0f}"
            f"{row.person_errors:>5}{rss:>14}{row.left_open:>6}  "
            + ("met" if not row.checks else "MISSED: " + "; ".join(row.checks))
        )
    lines.append("p50/p90/max: the logged-in person's reads during the flood, ms; err: "
                 "their reads that were not 200; open: connections to the API still "
                 "established after the flood")  # fmt: skip
    return "\n".join(lines)


async def run(abuse: Abuse) -> list[Row]:
    await abuse.sign_up()
    rows = []
    for name, attack, rss_bound in (
        ("filtered", abuse.filtered_lists, False),
        ("search", abuse.short_searches, False),
        ("reads", abuse.cheap_reads, False),
        ("spellings", abuse.spellings, True),
        ("sign-ups", abuse.sign_ups, False),
        ("guesses", abuse.guesses, False),
        ("half-sent", abuse.half_sent, False),
    ):
        print(f"{name} …", file=sys.stderr, flush=True)
        row = await attack()
        judge(row, rss_bound=rss_bound)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.abuse", description=__doc__)
    parser.add_argument("--movielens", type=Path, default=SMALL)
    args = parser.parse_args(argv)
    if not args.movielens.exists():
        parser.error(f"no MovieLens release at {args.movielens}")
    with tempfile.TemporaryDirectory(prefix="abuse-") as tmp:
        stack = ChaosStack(Path(tmp))
        for name in ("WEIGHTED_REFRESH_INTERVAL", "IMPORT_STALE_AFTER", "IMPORT_SWEEP_INTERVAL"):
            stack.env.pop(name, None)  # make chaos's; this stack runs the defaults
        stack.env.update(CELERY_QUEUE="abuse", LOG_LEVEL="WARNING")
        try:
            print("starting the embedded stack …", file=sys.stderr, flush=True)
            stack.start()
            print("seeding ml-latest-small …", file=sys.stderr, flush=True)
            subprocess.run(
                [sys.executable, "-m", "seed", "movielens", str(args.movielens)],
                env=stack.env, check=True, stdout=subprocess.DEVNULL,
                stderr=(stack.work / "seed.log").open("wb"),
            )  # fmt: skip
            rows = asyncio.run(run(Abuse(stack)))
        finally:
            stack.close()
    print(table(rows))
    return 1 if any(row.checks for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
