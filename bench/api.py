"""API benchmark (not a test): `make bench` or `python -m bench.api`.

Starts its own stack (SecantusDB on disk, a private redis-server, a Celery worker, and two
single-process API servers: one with the Redis cache, one without it, so every read there
is a miss), imports ml-latest-small, then measures in one run:

- requests/s, p50 and p99 with wrk for each route, next to bare aiohttp handlers that
  return bodies of the same sizes on the same paths under the same wrk script (the ceiling
  for this machine, loop, HTTP stack and load generator), and next to one bare URL loaded
  without a script (the classic, higher ceiling);
- each cold read route (the server without the cache) next to the driver alone sending the
  queries that route needs, on the same server with the same concurrency, twice (API
  first, then driver first): the ratio is the API's own share of the cost, and the
  server's find commands per request on each side say what the API's batching saves;
- MongoDB commands per request (the API's own CommandListener, read from X-DB-Calls) and
  the cache hit ratio during the cached runs;
- a burst of 1,000 ratings on one movie from 1,000 users: how many drains recomputed that
  movie and how long until the stored summary was exact.

SecantusDB is much slower than MongoDB on misses, so cold numbers say more about the
database than about the API; the warm ratios are the API's own.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
from bson import ObjectId
from pymongo import AsyncMongoClient, MongoClient

from bench import scoring
from core import processes
from core.search import SearchText
from core.security import TokenService, generate_keyset
from core.services.search import CANDIDATES
from core.settings import Settings
from core.store.movies import CANDIDATE_FIELDS as SEARCH_CANDIDATE
from core.store.movies import CARD_FIELDS as MOVIE_CARD
from embedded import stack as embedded
from models import SCORES, RatingStats, utcnow
from tests.seed.ml_small import SEARCHES

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SMALL = ROOT.parent / "shared" / "movielens" / "ml-latest-small"
API = "/api/v1"
DB = "bench_api"
PICK = 200  # movies and users the load spreads over
# API and driver runs per cold route, in A-B, B-A order, averaged (one pair: 0.75-0.98)
COLD_PAIRS = 2
DEEP = 5_000  # the item whose page is compared with the first

PATHS_LUA = """
local paths = {%s}
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""

PUT_LUA = """
local tokens = {%s}
local movies = {%s}
local scores = {"0.5", "1.0", "1.5", "2.0", "2.5", "3.0", "3.5", "4.0", "4.5", "5.0"}
request = function()
  local headers = {}
  headers["Authorization"] = "Bearer " .. tokens[math.random(#tokens)]
  headers["Content-Type"] = "application/json"
  local path = "%s/movies/" .. movies[math.random(#movies)] .. "/rating"
  return wrk.format("PUT", path, headers, '{"score": ' .. scores[math.random(#scores)] .. '}')
end
"""


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    requests: int
    finds: float = 0.0  # find commands the server ran per request (its opcounters)
    cpu_us: float = 0.0  # the API process's CPU (user + system) per request, microseconds


def mean_load(runs: list[Load]) -> Load:
    """Several runs of one load as one: each figure's mean, counts summed."""
    return Load(
        rps=sum(r.rps for r in runs) / len(runs),
        p50_ms=sum(r.p50_ms for r in runs) / len(runs),
        p99_ms=sum(r.p99_ms for r in runs) / len(runs),
        errors=sum(r.errors for r in runs),
        requests=sum(r.requests for r in runs),
        finds=sum(r.finds * r.requests for r in runs) / max(1, sum(r.requests for r in runs)),
        cpu_us=sum(r.cpu_us * r.requests for r in runs) / max(1, sum(r.requests for r in runs)),
    )


def cpu_seconds(pid: int) -> float:
    """User plus system CPU a process has used (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def counting_finds(client: MongoClient, run: Callable[[], Load]) -> Load:
    """`run`, with the find commands the server ran meanwhile per request (serverStatus)."""

    def finds() -> int:
        counters = client.admin.command("serverStatus")["opcounters"]
        return int(counters["query"]) + int(counters["getmore"])

    before = finds()
    result = run()
    result.finds = (finds() - before) / max(1, result.requests)
    return result


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(url: str, *, script: Path | None, duration: int, connections: int) -> Load:
    """One wrk run: requests/s and latency percentiles; non-2xx answers count as errors."""
    cmd = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency"]
    if script:
        cmd += ["-s", str(script)]
    out = subprocess.run([*cmd, url], capture_output=True, text=True, check=True).stdout
    latency = dict(re.findall(r"^\s+(50|99)%\s+(\S+)\s*$", out, re.M))
    if "50" not in latency or "99" not in latency:
        raise RuntimeError(f"unexpected wrk output for {url}:\n{out}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    if socket_errors:
        print(f"  wrk socket errors on {url}: {socket_errors.group(1)}", file=sys.stderr)
    return Load(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        p50_ms=_ms(latency["50"]),
        p99_ms=_ms(latency["99"]),
        errors=int(errors.group(1)) if errors else 0,
        requests=int(re.search(r"(\d+) requests in", out).group(1)),  # type: ignore[union-attr]
    )


def lua_paths(tmp: Path, name: str, paths: list[str]) -> Path:
    script = tmp / f"{name}.lua"
    script.write_text(PATHS_LUA % ", ".join(json.dumps(p) for p in paths))
    return script


# ---- the bare ceiling ------------------------------------------------------------------------


def serve_bare(port: int, sizes_file: Path) -> None:
    """Bare aiohttp handlers on uvloop: for `/` and for every path the load runs ask for, a
    fixed JSON body of the size our API answers there, nothing else. Each path is a plain
    route (a dictionary lookup), the cheapest way aiohttp can serve many paths."""
    from aiohttp import web

    from api.__main__ import _event_loop

    def handler(size: int) -> Any:
        body = b'{"x":"' + b"x" * max(0, size - 8) + b'"}'

        async def bare(request: web.Request) -> web.Response:
            return web.Response(body=body, content_type="application/json")

        return bare

    app = web.Application()
    routes = {path.partition("?")[0]: size for path, size in json.loads(sizes_file.read_text())}
    for path, size in routes.items():
        app.router.add_get(path, handler(size))
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=_event_loop())


# ---- the stack -------------------------------------------------------------------------------


class Stack:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.procs: list[subprocess.Popen] = []
        self.keyset = generate_keyset()
        db_port, redis_port = processes.free_port(), processes.free_port()
        self.procs.append(
            embedded.start_secantus(
                storage=str(work / "db"), port=db_port, log_file=work / "db.log",
                extra=("--cache-size", "2G"),
            )
        )  # fmt: skip
        self.procs.append(
            embedded.start_redis(port=redis_port, workdir=work / "redis", log_file=work / "r.log")
        )
        self.mongodb_url = f"mongodb://127.0.0.1:{db_port}"
        self.redis_url = f"redis://127.0.0.1:{redis_port}/0"
        self.env = dict(
            os.environ,
            ENVIRONMENT="development",
            MONGODB_URL=self.mongodb_url,
            MONGODB_DB=DB,
            REDIS_URL=self.redis_url,
            DATA_DIR=str(work),
            TOKEN_SIGNING_KEYS=json.dumps(self.keyset.as_dict(private=True)),
            CELERY_QUEUE="bench",
            LOG_LEVEL="WARNING",
            WEB_CONCURRENCY="1",
            # wrk is one anonymous client at 32 connections: admission runs on every request
            # (its cost is measured) with room for all of them.
            ADMISSION_BUDGET_ADDRESS=str(10**9),
            ADMISSION_INFLIGHT="512",
            ADMISSION_ANONYMOUS_INFLIGHT="512",
            ADMISSION_ANONYMOUS_HEAVY_INFLIGHT="512",
        )
        self.settings = Settings(
            mongodb_url=self.mongodb_url,
            mongodb_db=DB,
            redis_url=self.redis_url,
            token_signing_keys=self.env["TOKEN_SIGNING_KEYS"],
        )
        self.tokens = TokenService(self.settings, self.keyset)
        self.worker_log = work / "worker.log"
        self.pids: dict[str, int] = {}  # each API process by its base URL

    def start(self, cmd: list[str], log: str, **env: str) -> subprocess.Popen:
        proc = processes.spawn(cmd, env={**self.env, **env}, log_file=self.work / log)
        self.procs.append(proc)
        return proc

    def api(self, port: int, **env: str) -> str:
        proc = self.start(
            [sys.executable, "-m", "api", "serve"], f"api-{port}.log",
            PORT=str(port), EXPOSE_DB_CALLS="true", **env,
        )  # fmt: skip
        processes.wait_until(
            lambda: processes.port_open(port), timeout=60, what=f"API on {port}", proc=proc
        )
        self.pids[f"http://127.0.0.1:{port}"] = proc.pid
        return f"http://127.0.0.1:{port}"

    def stop(self) -> None:
        processes.stop(self.procs)


def make_users(db: Any, prefix: str, n: int) -> list[ObjectId]:
    """Local users straight into MongoDB (hashing 1,000 passwords would take a minute)."""
    now = utcnow()
    docs = [
        {
            "username": f"{prefix}{i}",
            "email": None,
            "display_name": f"{prefix} {i}",
            "password_hash": None,
            "role": "user",
            "external_ids": {},
            "stats": RatingStats().model_dump(),
            "created_at": now,
            "updated_at": now,
        }
        for i in range(n)
    ]
    return list(db.users.insert_many(docs).inserted_ids)


async def probe(base: str, method: str, path: str, **kw: Any) -> tuple[int, int, bytes]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, base + path, **kw) as resp:
            return resp.status, int(resp.headers.get("X-DB-Calls", -1)), await resp.read()


async def warm(base: str, paths: list[str]) -> dict[str, int]:
    """GET every path once (filling the caches); returns each answer's body size."""
    sizes = {}
    async with aiohttp.ClientSession() as session:
        for path in paths:
            async with session.get(base + path) as resp:
                sizes[path] = len(await resp.read())
    return sizes


async def burst(
    base: str, tokens: list[str], movie_id: str, scores: list[float], concurrency: int = 64
) -> tuple[float, float]:
    """PUT one rating per token, `concurrency` at a time; returns (started, finished)."""
    limit = asyncio.Semaphore(concurrency)
    async with aiohttp.ClientSession() as session:

        async def one(token: str, score: float) -> None:
            async with limit:
                async with session.put(
                    f"{base}{API}/movies/{movie_id}/rating",
                    json={"score": score},
                    headers={"Authorization": f"Bearer {token}"},
                ) as resp:
                    if resp.status not in (200, 201):
                        raise RuntimeError(f"burst PUT failed: {resp.status} {await resp.text()}")

        started = time.perf_counter()
        await asyncio.gather(*(one(t, s) for t, s in zip(tokens, scores, strict=True)))
        return started, time.perf_counter()


async def raw_upserts(
    url: str, users: list[ObjectId], movies: list[str], *, seconds: float, concurrency: int
) -> float:
    """The server's own ceiling for rating writes: update_one upserts on the ratings
    collection (same indexes, same pairs, same write concern as the PUT run), `concurrency`
    at a time; per s."""
    # The API's own durability (core.store.DURABLE): a journaled write against a journaled one.
    client: Any = AsyncMongoClient(url, tz_aware=True, w="majority", journal=True)
    ratings = client[DB].ratings
    done = 0
    deadline = time.perf_counter() + seconds
    rng = random.Random(3)

    async def writer() -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            now = utcnow()
            await ratings.update_one(
                {"user_id": rng.choice(users), "movie_id": ObjectId(rng.choice(movies))},
                {"$set": {"score": 3.0, "updated_at": now}, "$setOnInsert": {"rated_at": now}},
                upsert=True,
            )
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(concurrency)))
    await client.close()
    return done / (time.perf_counter() - started)


# ---- the same reads straight through the driver -----------------------------------------------

RawRead = Callable[[Any], Awaitable[Any]]  # one route's queries, given the database


async def raw_reads(
    url: str, reads: dict[str, RawRead], *, seconds: float, concurrency: int
) -> Load:
    """The driver's own figures for a route's queries on the same server: each of
    `concurrency` tasks runs one of `reads` (chosen at random) after another. Like the API
    process (whose single flight holds even with the cache off), identical reads in flight
    at once share one run of the queries, so both sides ask the server for the same work."""
    client: Any = AsyncMongoClient(url, tz_aware=True, maxPoolSize=concurrency)
    db = client[DB]
    took: list[float] = []
    flights: dict[str, asyncio.Task[Any]] = {}
    deadline = time.perf_counter() + seconds
    rng = random.Random(5)
    names = sorted(reads)

    def landed(name: str, _: asyncio.Task[Any]) -> None:
        flights.pop(name, None)

    async def reader() -> None:
        while time.perf_counter() < deadline:
            name = rng.choice(names)
            started = time.perf_counter()
            flight = flights.get(name)
            if flight is None:
                flight = flights[name] = asyncio.ensure_future(reads[name](db))
                flight.add_done_callback(partial(landed, name))
            await asyncio.shield(flight)
            took.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(reader() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await client.close()
    took.sort()
    return Load(
        rps=len(took) / elapsed,
        p50_ms=took[len(took) // 2] * 1000,
        p99_ms=took[min(len(took) - 1, int(len(took) * 0.99))] * 1000,
        errors=0,
        requests=len(took),
    )


def movie_read(movie_id: str) -> RawRead:
    return lambda db: db.movies.find_one({"_id": ObjectId(movie_id)})


def list_read(sort: list[tuple[str, int]], flt: dict[str, Any] | None = None) -> RawRead:
    return lambda db: db.movies.find(flt or {}).sort(sort).limit(21).to_list(None)


def profile_read(user_id: str) -> RawRead:
    async def read(db: Any) -> None:
        rows = await (
            db.ratings.find({"user_id": ObjectId(user_id)})
            .sort([("rated_at", -1), ("_id", -1)])
            .limit(21)
            .to_list(None)
        )
        ids = [r["movie_id"] for r in rows[:20]]
        await db.movies.find({"_id": {"$in": ids}}, MOVIE_CARD).to_list(None)

    return read


def search_read(q: str) -> RawRead:
    """A search's three reads: the exact names, the candidates, the page by _id."""
    text = SearchText.parse(q)
    assert text is not None

    async def read(db: Any) -> None:
        exact = await db.movies.find({"search_terms": text.exact_term}, SEARCH_CANDIDATE).to_list(
            None
        )
        words = await (
            db.movies.find({"search_terms": text.longest_word}, SEARCH_CANDIDATE)
            .sort("rating.count", -1)
            .limit(CANDIDATES)
            .to_list(None)
        )
        ids = [d["_id"] for d in (exact + words)[:21]]
        await db.movies.find({"_id": {"$in": ids}}).to_list(None)

    return read


def deep_position(db: Any, item: int) -> tuple[int, ObjectId]:
    """The sort key of the row before `item` in the -votes order."""
    doc = db.movies.find({}, {"rating.count": 1}).sort([("rating.count", -1), ("_id", 1)])
    row = doc.skip(item - 1).limit(1).next()
    return row["rating"]["count"], row["_id"]


def deep_read(after: tuple[int, ObjectId]) -> RawRead:
    """The keyset reads of a page after `after` (core.services.keyset_parts)."""
    votes, last = after

    async def read(db: Any) -> None:
        rows = (
            await db.movies.find({"rating.count": votes, "_id": {"$gt": last}})
            .sort("_id", 1)
            .limit(21)
            .to_list(None)
        )
        if len(rows) < 21:
            await (
                db.movies.find({"rating.count": {"$lt": votes}})
                .sort([("rating.count", -1), ("_id", 1)])
                .limit(21 - len(rows))
                .to_list(None)
            )

    return read


async def walk_to(base: str, path: str, item: int) -> str:
    """The path of the page that starts at `item`, followed from page 1 by its cursors."""
    seen = 0
    async with aiohttp.ClientSession() as session:
        while seen < item:
            async with session.get(base + path) as resp:
                page = await resp.json()
            seen += len(page["items"])
            if page["next"] is None:
                raise RuntimeError(f"the list ends at {seen} items")
            path = page["next"]
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.api", description=__doc__)
    parser.add_argument("--movielens", type=Path, default=DEFAULT_SMALL)
    parser.add_argument(
        "--keep", action="store_true", help="keep the stack's folder (logs, database) and say where"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--burst", type=int, default=1000)
    parser.add_argument("--bare", nargs=2, metavar=("PORT", "SIZES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.bare:
        serve_bare(int(args.bare[0]), Path(args.bare[1]))
        return 0
    if shutil.which("wrk") is None:
        parser.error("wrk is not installed (Debian: apt-get install wrk)")
    if not args.movielens.exists():
        parser.error(f"no MovieLens release at {args.movielens}")

    work = Path(tempfile.mkdtemp(prefix="api-bench-"))
    stack = Stack(work)
    try:
        return run(stack, args)
    finally:
        stack.stop()
        if args.keep:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run(stack: Stack, args: argparse.Namespace) -> int:
    work = stack.work
    print("importing ml-latest-small …", file=sys.stderr, flush=True)
    subprocess.run(
        [sys.executable, "-m", "seed", "movielens", str(args.movielens)],
        env=stack.env, check=True, stdout=subprocess.DEVNULL,
        stderr=(work / "import.log").open("wb"),
    )  # fmt: skip
    stack.start(
        embedded.worker_command("bench", "--without-heartbeat"), "worker.log", LOG_LEVEL="INFO"
    )
    cached = stack.api(processes.free_port())
    uncached = stack.api(processes.free_port(), CACHE_ENABLED="false")

    client: MongoClient = MongoClient(stack.mongodb_url)
    db = client[DB]
    movies = [str(d["_id"]) for d in db.movies.find({}, {"_id": 1}).sort("rating.count", -1)]
    by_count = db.ratings.aggregate(
        [{"$group": {"_id": "$user_id", "n": {"$sum": 1}}}, {"$sort": {"n": -1}}]
    )
    users = [str(d["_id"]) for d in by_count][:PICK]
    top = movies[:PICK]

    status, _, body = asyncio.run(probe(cached, "GET", f"{API}/movies/{top[0]}"))
    assert status == 200, body

    # ---- MongoDB round trips per request ----
    heavy = users[0]
    raters = make_users(db, "bench-", PICK)
    raters_tokens = [stack.tokens.issue(subject=str(u), scopes=["ratings:write"]) for u in raters]
    trips: dict[str, float] = {
        "GET movie (hit)": asyncio.run(probe(cached, "GET", f"{API}/movies/{top[0]}"))[1],
        "GET movie (miss)": asyncio.run(probe(uncached, "GET", f"{API}/movies/{top[1]}"))[1],
        "GET list -weighted (miss)": asyncio.run(
            probe(uncached, "GET", f"{API}/movies?sort=-weighted")
        )[1],
        "GET profile 20 (miss)": asyncio.run(
            probe(uncached, "GET", f"{API}/users/{heavy}/ratings?limit=20")
        )[1],
        "GET profile 100 (miss)": asyncio.run(
            probe(uncached, "GET", f"{API}/users/{heavy}/ratings?limit=100")
        )[1],
        "PUT rating, new (movie unseen)": asyncio.run(
            probe(
                cached, "PUT", f"{API}/movies/{top[2]}/rating", json={"score": 4.0},
                headers={"Authorization": f"Bearer {raters_tokens[0]}"},
            )
        )[1],
        "PUT rating, new (movie seen)": asyncio.run(
            probe(
                cached, "PUT", f"{API}/movies/{top[2]}/rating", json={"score": 4.0},
                headers={"Authorization": f"Bearer {raters_tokens[1]}"},
            )
        )[1],
        "PUT rating, changed": asyncio.run(
            probe(
                cached, "PUT", f"{API}/movies/{top[2]}/rating", json={"score": 3.0},
                headers={"Authorization": f"Bearer {raters_tokens[0]}"},
            )
        )[1],
    }  # fmt: skip

    # ---- searches and deep pages, on the server without a cache ----
    search_paths = [f"{API}/movies?{urlencode({'q': q})}&limit=20" for q, _ in SEARCHES]
    search_calls = [asyncio.run(probe(uncached, "GET", path))[1] for path in search_paths]
    first_path = f"{API}/movies?sort=-votes&limit=20"
    print(f"walking to item {DEEP:,} by votes …", file=sys.stderr, flush=True)
    deep_path = asyncio.run(walk_to(uncached, first_path, DEEP))
    trips["GET search (miss), mean"] = sum(search_calls) / len(search_calls)
    trips[f"GET page at {DEEP:,} -votes (miss)"] = asyncio.run(probe(uncached, "GET", deep_path))[1]

    # ---- burst: 1,000 ratings on one movie from 1,000 users ----
    print(f"burst of {args.burst} ratings …", file=sys.stderr, flush=True)
    target = str(db.movies.find({"rating.count": 0}, {"_id": 1}).limit(1).next()["_id"])
    burst_tokens = [
        stack.tokens.issue(subject=str(u), scopes=["ratings:write"])
        for u in make_users(db, "burst-", args.burst)
    ]
    rng = random.Random(7)
    scores = [rng.choice(SCORES) for _ in burst_tokens]
    started, finished = asyncio.run(burst(cached, burst_tokens, target, scores))
    expected_mean = sum(scores) / len(scores)
    exact_at = None
    deadline = time.perf_counter() + 120
    while time.perf_counter() < deadline:
        doc = db.movies.find_one({"_id": ObjectId(target)}, {"rating": 1})
        rating = doc["rating"] if doc else {}
        if rating.get("count") == len(scores) and abs(rating["mean"] - expected_mean) < 1e-9:
            exact_at = time.perf_counter()
            break
        time.sleep(0.02)

    def drains() -> int:
        return sum(
            1
            for line in stack.worker_log.read_text(errors="replace").splitlines()
            if "summaries drained" in line and target in line
        )

    # Let the log catch up (the pool children's lines can land a while later), then count.
    log_deadline = time.perf_counter() + 10
    while not drains() and time.perf_counter() < log_deadline:
        time.sleep(0.5)
    time.sleep(1)
    recomputations = drains()

    # ---- load ----
    print("load runs …", file=sys.stderr, flush=True)
    movie_paths = [f"{API}/movies/{m}" for m in top]
    profile_paths = [f"{API}/users/{u}/ratings?limit=20" for u in users]
    list_paths = [f"{API}/movies?sort=-weighted"]
    sizes = asyncio.run(warm(cached, movie_paths + profile_paths + list_paths))
    sizes_file = work / "sizes.json"
    sizes_file.write_text(json.dumps([("/", sizes[movie_paths[0]]), *sizes.items()]))
    bare_port = processes.free_port()
    bare = stack.start(
        [sys.executable, "-m", "bench.api", "--bare", str(bare_port), str(sizes_file)],
        "bare.log",
    )
    processes.wait_until(lambda: processes.port_open(bare_port), timeout=30, what="bare", proc=bare)
    bare_url = f"http://127.0.0.1:{bare_port}"
    redis_stats_before = _cache_stats(stack)
    put_script = work / "put.lua"
    put_script.write_text(
        PUT_LUA
        % (
            ", ".join(json.dumps(t) for t in raters_tokens),
            ", ".join(json.dumps(m) for m in top),
            API,
        )
    )

    def load(base: str, script: Path | None) -> Load:
        path = "" if script else "/"
        pid = stack.pids.get(base)
        before = cpu_seconds(pid) if pid else 0.0
        result = wrk(
            base + path, script=script, duration=args.duration, connections=args.connections
        )
        if pid:
            result.cpu_us = (cpu_seconds(pid) - before) * 1e6 / max(1, result.requests)
        return result

    movie_lua = lua_paths(work, "movies", movie_paths)
    list_lua = lua_paths(work, "list", list_paths)
    profile_lua = lua_paths(work, "profiles", profile_paths)
    one_url = load(bare_url, None)
    rows: list[tuple[str, Load]] = [("bare aiohttp handler, one URL", one_url)]
    # Each warm route next to the bare handlers under the same wrk script (same paths, same
    # body sizes): wrk's Lua request() costs CPU on these two cores too, for both sides.
    ceilings: dict[str, Load] = {}
    for label, script, paths in (
        ("GET movie, warm cache", movie_lua, movie_paths),
        ("GET list -weighted, warm", list_lua, list_paths),
        ("GET profile 20, warm", profile_lua, profile_paths),
    ):
        ceilings[label] = load(bare_url, script)
        asyncio.run(warm(cached, paths))  # warm when its run starts: entries live CACHE_TTL
        rows.append((label, load(cached, script)))
    time.sleep(1.5)  # each API process reports its in-process hits once a second
    stats = _cache_stats(stack)
    near_hits = stats.get("near_hits", 0) - redis_stats_before.get("near_hits", 0)
    hits = stats.get("hits", 0) - redis_stats_before.get("hits", 0)
    misses = stats.get("misses", 0) - redis_stats_before.get("misses", 0)
    # Each cold route runs right before the driver runs its queries alone, so both sides
    # of a ratio meet the same machine (2 shared cores: load minutes apart is not comparable).
    deep_after = deep_position(db, DEEP)
    cold_routes = [
        ("GET movie, cold (no cache)", movie_lua, {m: movie_read(m) for m in top}),
        (
            "GET list -weighted, cold",
            list_lua,
            {"": list_read([("rating.weighted", -1), ("_id", 1)])},
        ),
        ("GET profile 20, cold", profile_lua, {u: profile_read(u) for u in users}),
        (
            "GET search, cold",
            lua_paths(work, "search", search_paths),
            {q: search_read(q) for q, _ in SEARCHES},
        ),
        (
            "GET page 1 -votes, cold",
            lua_paths(work, "p1", [first_path]),
            {"": list_read([("rating.count", -1), ("_id", 1)])},
        ),
        (
            f"GET page at {DEEP:,} -votes, cold",
            lua_paths(work, "deep", [deep_path]),
            {"": deep_read(deep_after)},
        ),
    ]
    raw: dict[str, Load] = {}
    for label, script, reads in cold_routes:
        api_runs, driver_runs = [], []
        for pair in range(COLD_PAIRS):
            api_run = partial(load, uncached, script)
            driver_run = partial(
                asyncio.run,
                raw_reads(
                    stack.mongodb_url, reads, seconds=args.duration, concurrency=args.connections
                ),
            )
            # A-B then B-A: whichever side runs first meets the server's colder caches.
            lead, follow = (api_run, driver_run) if pair % 2 == 0 else (driver_run, api_run)
            runs = [counting_finds(client, lead), counting_finds(client, follow)]
            api_runs.append(runs[pair % 2])
            driver_runs.append(runs[1 - pair % 2])
        rows.append((label, mean_load(api_runs)))
        raw[label] = mean_load(driver_runs)
    rows.append(("PUT rating, mixed", load(cached, put_script)))
    raw_writes = asyncio.run(
        raw_upserts(
            stack.mongodb_url, raters, top, seconds=args.duration, concurrency=args.connections
        )
    )
    client.close()

    print()
    print(f"machine: {os.cpu_count()} cores; wrk -t2 -c{args.connections} -d{args.duration}s; "
          "single-process servers on uvloop")  # fmt: skip
    print(f"{'route':<32}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'bare same load':>16}{'x bare':>8}{'x one URL':>11}{'non-2xx':>9}"
          f"{'API CPU us/req':>16}")  # fmt: skip
    for label, result in rows:
        ceiling = ceilings.get(label)
        same = f"{ceiling.rps:>16,.0f}{result.rps / ceiling.rps:>8.2f}" if ceiling else " " * 24
        print(
            f"{label:<32}{result.rps:>10,.0f}{result.p50_ms:>9.2f}{result.p99_ms:>9.2f}"
            f"{same}{result.rps / one_url.rps:>11.2f}{result.errors:>9}"
            f"{(f'{result.cpu_us:,.0f}' if result.cpu_us else '-'):>16}"
        )
    print("x bare: against bare handlers under the same wrk script (paths, body sizes); "
          "x one URL: against one bare URL without a script; API CPU: the serving process's "
          "user + system CPU over the run per request")  # fmt: skip
    print()
    served = near_hits + hits + misses
    print(f"cache hit ratio during the warm runs: {(near_hits + hits) / max(1, served):.4f} "
          f"({near_hits:,} from the process's copy, {hits:,} from Redis, "
          f"{misses:,} misses)")  # fmt: skip
    put = rows[-1][1].rps
    print(f"PUT rating against raw update_one upserts on the same server ({raw_writes:,.0f}/s, "
          f"same concurrency): {put / raw_writes:.2f}")  # fmt: skip
    print()
    print("Cold reads next to the driver running the same queries alone on the same server, "
          f"same concurrency, mean of {COLD_PAIRS} pairs run A-B, B-A "
          "(x driver: the API's share of the cost; 1.00 is none)")  # fmt: skip
    print("finds/req: find commands the server ran per request (serverStatus opcounters)")
    print(f"{'route':<32}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'driver/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'x driver':>10}"
          f"{'finds/req':>11}{'driver':>8}")  # fmt: skip
    measured = dict(rows)
    for label, driver in raw.items():
        api_load = measured[label]
        print(
            f"{label:<32}{api_load.rps:>10,.0f}{api_load.p50_ms:>9.2f}{api_load.p99_ms:>9.2f}"
            f"{driver.rps:>10,.0f}{driver.p50_ms:>9.2f}{driver.p99_ms:>9.2f}"
            f"{api_load.rps / driver.rps:>10.2f}{api_load.finds:>11.2f}{driver.finds:>8.2f}"
        )
    first, deep = (
        measured["GET page 1 -votes, cold"],
        measured[f"GET page at {DEEP:,} -votes, cold"],
    )
    p50_ratio, rps_ratio = deep.p50_ms / first.p50_ms, first.rps / deep.rps
    print(f"page at item {DEEP:,} by votes against page 1, cold: p50 {p50_ratio:.2f}x, "
          f"requests/s {rps_ratio:.2f}x slower")  # fmt: skip
    print()
    print(f"{'MongoDB commands per request':<34}{'count':>6}")
    for label, count in trips.items():
        print(f"{label:<34}{count:>6.3g}")
    print()
    took = f"{exact_at - finished:.2f} s after the last response" if exact_at else "NOT EXACT"
    print(f"burst: {len(scores):,} ratings on one movie in {finished - started:.2f} s; "
          f"{recomputations} drains recomputed it; summary exact {took}")  # fmt: skip
    print()
    print(scoring.figures())
    return 0 if exact_at else 1


def _cache_stats(stack: Stack) -> dict[str, int]:
    import redis

    raw: dict[bytes, bytes] = redis.Redis.from_url(stack.redis_url).hgetall(  # type: ignore[assignment]
        f"{DB}:cache:stats"
    )
    return {k.decode(): int(v) for k, v in raw.items()}


if __name__ == "__main__":
    sys.exit(main())
