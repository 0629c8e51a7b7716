"""Import benchmark (not a test): `python -m bench.imports` or `make bench-import`.

Starts its own SecantusDB, imports ml-latest-small and a synthetic release of 1,000,000
ratings with the real CLI (a child process, so its peak RSS is the importer's alone), then
times a raw insert_many of the very same rating documents into a collection with the same
indexes on the same server, and prints both side by side: SecantusDB is much slower than
MongoDB, so only the ratio says something about the importer.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient

from core import processes
from core.store import ratings as rating_store
from embedded import stack as embedded
from seed.synth import generate

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SMALL = ROOT.parent / "shared" / "movielens" / "ml-latest-small"


def run_import(path: Path, mongodb_url: str, db_name: str, workdir: Path) -> dict:
    """Run `python -m seed movielens` as a child; returns its report, wall time, peak RSS."""
    report_file = workdir / f"{db_name}.json"
    env = dict(
        os.environ,
        MONGODB_URL=mongodb_url,
        MONGODB_DB=db_name,
        LOG_LEVEL="WARNING",
        DATA_DIR=str(workdir),
    )
    started = time.perf_counter()
    log_file = workdir / f"{db_name}.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "seed", "movielens", str(path), "--report-json",
             str(report_file)],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        tail = log_file.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"import of {path} failed with status {status}:\n{tail}")
    report = json.loads(report_file.read_text())
    return {"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024, "report": report}


def raw_insert(client: MongoClient, db_name: str, *, batch: int = 5000) -> tuple[float, int]:
    """insert_many of the imported rating documents into a fresh, identically indexed copy."""
    db = client[db_name]
    docs = list(db.ratings.find({}, {"_id": 0}))
    scratch = db["raw_ratings"]
    scratch.drop()
    scratch.create_indexes(rating_store.INDEXES)
    started = time.perf_counter()
    for i in range(0, len(docs), batch):
        scratch.insert_many(docs[i : i + batch], ordered=False)
    return time.perf_counter() - started, len(docs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.imports", description=__doc__)
    parser.add_argument("--movielens", type=Path, default=DEFAULT_SMALL)
    parser.add_argument("--synthetic-ratings", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    if not args.movielens.exists():
        parser.error(f"no MovieLens release at {args.movielens}")

    with tempfile.TemporaryDirectory(prefix="import-bench-") as tmp:
        work = Path(tmp)
        port = processes.free_port()
        # On disk with a larger cache: in memory, two copies of a 1M-rating collection
        # overflow the default 1 GB WiredTiger cache (WT_CACHE_FULL on insert).
        server = embedded.start_secantus(
            storage=str(work / "db"), port=port, log_file=work / "db.log",
            extra=("--cache-size", "4G"),
        )  # fmt: skip
        url = f"mongodb://127.0.0.1:{port}"
        client: MongoClient = MongoClient(url)
        try:
            n = args.synthetic_ratings
            synth = work / "synthetic"
            generate(synth, ratings=n, users=max(100, n // 160), movies=max(500, n // 50))
            rows = []
            for label, path, db_name in [
                ("ml-latest-small", args.movielens, "bench_small"),
                (f"synthetic {n:,}", synth, "bench_synth"),
            ]:
                print(f"importing {label} …", file=sys.stderr, flush=True)
                result = run_import(path, url, db_name, work)
                raw_seconds, count = raw_insert(client, db_name)
                ratings = result["report"]["ratings"]["inserted"]
                rows.append((label, ratings, result, raw_seconds, count))
        finally:
            client.close()
            processes.stop([server])

    print()
    print(
        f"{'dataset':<22}{'ratings':>10}{'import s':>10}{'rows/s':>9}{'peak RSS':>10}"
        f"{'ratings s':>11}{'raw s':>8}{'ratio':>7}{'ratio*':>8}"
    )
    for label, ratings, result, raw_seconds, _count in rows:
        timings = result["report"]["timings"]
        ratings_phase = timings.get("ratings.csv", 0.0)
        print(
            f"{label:<22}{ratings:>10,}{result['seconds']:>10.1f}"
            f"{ratings / result['seconds']:>9,.0f}{result['peak_rss_mb']:>8.0f}MB"
            f"{ratings_phase:>11.1f}{raw_seconds:>8.1f}"
            f"{result['seconds'] / raw_seconds:>7.2f}{ratings_phase / raw_seconds:>8.2f}"
        )
    print()
    print("import s: the whole CLI run (process start, parse, upserts, users, movies, bulk")
    print("          aggregation of every summary, C and weighted scores);")
    print("raw s:    insert_many of the same rating documents into a collection with the same")
    print("          indexes, on the same server, in the same run;")
    print("ratio:    import s / raw s; ratio*: the ratings phase alone / raw s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
