"""Data loading from the command line.

python -m seed sample                         the shipped sample, into an empty database
python -m seed movielens PATH_OR_ZIP          import a MovieLens release
python -m seed movielens --download NAME      fetch ml-latest-small / ml-25m / ml-32m first
python -m seed synth --ratings N --users U --movies M --out DIR
python -m seed download NAME [--cache DIR]     fetch a release only; prints its path
python -m seed dedupe [--dry-run]             merge duplicate movies into one record each

Each command acts on the stack running in DATA_DIR (else ./data), else on MONGODB_URL and
REDIS_URL, else on the one stack you run, and prints which first; `python -m seed COMMAND
--help` lists the environment it reads.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from tqdm import tqdm

from core import stacks, store
from core.cache import Cache
from core.cli import OPERATOR_ENV, subcommand, subparsers
from core.imports.download import DATASETS, DownloadError, dataset_url, fetch
from core.imports.release import MovieLensRelease
from core.imports.source import Source, SourceError
from core.imports.writer import Hooks, MovieLensImport
from core.logs import configure_logging
from core.services.dedupe import DedupeReport, dedupe
from core.settings import Settings, settings_problem
from core.store.leases import IMPORT_LEASE, FencedLease, LeaseBusy, LeaseLost
from models import ImportReport
from seed.sample import seed_sample
from seed.synth import generate


class BarHooks(Hooks):
    """One progress bar per file and per phase after them (summaries, weighted scores), on
    stdout with the summary: the JSON logs keep stderr to themselves. With a cache, each
    batch of movies shows in the running API's lists and searches at once."""

    def __init__(self, cache: Cache | None = None) -> None:
        self.bar: tqdm | None = None
        self.cache = cache

    async def movies_written(self, *, inserted: list[Any], updated: list[Any]) -> None:
        if self.cache is not None:
            await self.cache.movies_changed(updated)

    async def file_started(self, name: str, total: int) -> None:
        unit = " rows" if name.endswith(".csv") else " records"
        self.bar = tqdm(
            total=total, desc=f"{name:<15}", unit=unit, unit_scale=True, file=sys.stdout
        )

    async def advanced(self, name: str, rows: int, report: ImportReport) -> None:
        if self.bar is not None:
            self.bar.update(rows)

    async def file_finished(self, name: str, report: ImportReport) -> None:
        if self.bar is not None:
            self.bar.close()


def summary(report: ImportReport, seconds: float, *, dry_run: bool) -> str:
    lines = [f"{'dry run: nothing written' if dry_run else 'import finished'} in {seconds:.1f} s"]
    for kind in ("movies", "users", "ratings"):
        c = getattr(report, kind)
        counts = f"{c.inserted:>9} inserted {c.updated:>9} updated {c.unchanged:>9} unchanged"
        lines.append(f"  {kind:<8} {counts}")
    lines.append(f"  tags     {report.tags:>9} read (not stored)")
    if report.merged:
        lines.append(
            f"  merged   {report.merged:>9} release records of a film another record stands "
            "for (same IMDb or TMDb id): their ratings went to that record"
        )
    lines.append(f"  bad rows {report.bad_rows:>9}")
    lines.append("  seconds  " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items()))
    for bad in report.bad_samples[:20]:
        lines.append(f"    {bad.file}:{bad.line}: {bad.reason}")
    return "\n".join(lines)


async def _with_db(settings: Settings, work):  # type: ignore[no-untyped-def]
    client = await store.connect(settings, op_budget=settings.mongodb_worker_timeout)
    try:
        return await work()
    finally:
        await store.close(client)


async def _invalidate_cache(settings: Settings) -> None:
    """The API's cached reads predate this import: start a new cache epoch."""
    from redis.asyncio import Redis

    from core.cache import cache_for

    async with Redis.from_url(settings.redis_url_required, socket_connect_timeout=2) as redis:
        await cache_for(settings, redis).everything_changed()


async def _ask_for_training(settings: Settings) -> str:
    """Ask the workers for a model now; the import's mark in the database makes one due at
    beat's next look anyway, so a broker that cannot be reached only delays it."""
    from core.queue import TRAIN_RECOMMENDER, make_producer

    later = (
        f"recommendations: a worker trains a new model within {settings.recommender_interval:g} s "
        "of its next look"
    )
    if not settings.redis_url:
        return later
    producer = make_producer(settings)
    try:
        await asyncio.wait_for(
            asyncio.to_thread(producer.send_task, TRAIN_RECOMMENDER, kwargs={"only_if_due": True}),
            timeout=5,
        )
    except Exception:  # the mark in the database is the record
        return later
    finally:
        producer.close()
    return "recommendations: a new model was asked for (a running worker trains it now)"


async def _dedupe(settings: Settings, *, dry_run: bool) -> int:
    from redis.asyncio import Redis

    from core.cache import cache_for

    redis = (
        Redis.from_url(settings.redis_url, socket_connect_timeout=2) if settings.redis_url else None
    )
    cache = cache_for(settings, redis) if redis is not None and not dry_run else None

    async def work() -> DedupeReport:
        return await dedupe(dry_run=dry_run, prior_votes=settings.rating_prior_votes, cache=cache)

    try:
        report = await _with_db(settings, work)
    finally:
        if redis is not None:
            await redis.aclose()
    for merge in report.merges:
        print(merge.describe(dry_run=dry_run))
    verb = "would merge" if dry_run else "merged"
    print(f"{report.movies_checked} movies checked; {verb} {len(report.merges)} duplicates")
    return 0


async def _sample(settings: Settings) -> int:
    added = await _with_db(settings, seed_sample)
    print(f"sample catalogue: {added} movies added" if added else "catalogue not empty: no seed")
    return 0


async def _movielens(settings: Settings, path: Path, *, dry_run: bool) -> dict:
    from redis.asyncio import Redis

    from core.cache import cache_for

    redis = (
        Redis.from_url(settings.redis_url, socket_connect_timeout=2) if settings.redis_url else None
    )
    cache = cache_for(settings, redis) if redis is not None and not dry_run else None
    release = MovieLensRelease(Source(path))
    holder = f"cli:{socket.gethostname()}:{os.getpid()}"
    importer = MovieLensImport(
        release,
        hooks=BarHooks(cache),
        dry_run=dry_run,
        batch_size=settings.import_batch_size,
        prior_votes=settings.rating_prior_votes,
        drain_settle=settings.drain_settle,
        lease=FencedLease(IMPORT_LEASE, holder=holder, ttl=settings.import_stale_after),
    )
    started = time.perf_counter()
    try:
        report = await _with_db(settings, importer.run)
    except LeaseBusy as busy:
        raise RuntimeError(
            f"another import is writing ({busy.holder}); run this one when it has ended"
        ) from None
    except LeaseLost:
        raise RuntimeError(
            "this import stalled past its lease and stopped; run it again (it resumes)"
        ) from None
    finally:
        release.close()
        if redis is not None:
            await redis.aclose()
    seconds = time.perf_counter() - started
    if not dry_run and settings.redis_url:
        await _invalidate_cache(settings)
    print(summary(report, seconds, dry_run=dry_run))
    if not dry_run and report.ratings.inserted + report.ratings.updated:
        print(await _ask_for_training(settings))
    return {**report.model_dump(), "seconds": seconds}


def build_parser() -> argparse.ArgumentParser:
    """Every command and option, each with its help text."""
    parser = argparse.ArgumentParser(
        prog="python -m seed",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    command = partial(subcommand, sub)
    command("sample", help="load the shipped sample catalogue if the database is empty")
    ml = command(
        "movielens",
        help="import a MovieLens release (folder or .zip); a new recommendation model follows "
        "when ratings changed",
        env=(*OPERATOR_ENV, "import_batch_size", "movielens_base_url"),
    )
    ml.add_argument(
        "path", nargs="?", type=Path,
        help="a MovieLens folder (movies.csv, links.csv, ratings.csv, optional tags.csv) or a "
        ".zip of one, e.g. ../shared/movielens/ml-latest-small",
    )  # fmt: skip
    ml.add_argument(
        "--download", choices=DATASETS,
        help="fetch this release from MOVIELENS_BASE_URL into DATA_DIR/cache (MD5-checked, "
        "resumable) and import it, instead of PATH",
    )  # fmt: skip
    ml.add_argument("--dry-run", action="store_true", help="count everything, write nothing")
    ml.add_argument("--report-json", type=Path, help="also write the full report here")
    download = command(
        "download",
        help="fetch a MovieLens release (MD5-checked, resumable); print its path",
        env=("data_dir", "movielens_base_url"),
    )
    download.add_argument("name", choices=DATASETS, help="which release")
    download.add_argument(
        "--cache", type=Path, help="the folder to keep it in (default DATA_DIR/cache)"
    )
    dedupe = command(
        "dedupe",
        help="merge duplicate movies (same IMDb or TMDb id, or same title and year where one "
        "has no id) into one record each: ratings move to the kept record (a user who rated "
        "both keeps the newer one), summaries are recomputed, every merge is printed",
    )
    dedupe.add_argument(
        "--dry-run", action="store_true", help="list the duplicates that would merge; write nothing"
    )
    synth = command(
        "synth",
        help="write a synthetic MovieLens-format release (for benchmarks; no database)",
        env=("log_level",),
    )
    synth.add_argument("--ratings", type=int, required=True, help="how many ratings to write")
    synth.add_argument("--users", type=int, required=True, help="how many distinct users")
    synth.add_argument("--movies", type=int, required=True, help="how many distinct movies")
    synth.add_argument("--out", type=Path, required=True, help="the folder to write into")
    synth.add_argument(
        "--seed", type=int, default=42, help="random seed: the same seed writes the same files"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # answered by the command's own usage, not the top level's
        subparsers(parser)[args.command].error(f"unrecognized arguments: {' '.join(extra)}")

    try:
        settings = Settings()
    except ValueError as exc:  # pydantic's ValidationError: one line, no traceback
        print(f"error: bad setting: {settings_problem(exc)}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level)
    if args.command == "synth":
        try:
            made = generate(
                args.out, ratings=args.ratings, users=args.users, movies=args.movies, seed=args.seed
            )
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        print(
            f"wrote {made.movies} movies, {made.users} users, {made.ratings} ratings to {args.out}"
        )
        return 0
    if args.command == "download":
        try:
            path = fetch(
                dataset_url(args.name, settings.movielens_base_url),
                cache_dir=args.cache or settings.cache_dir,
            )
        except DownloadError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(path)
        return 0
    try:
        settings, where = stacks.for_command(settings)
    except stacks.StackNotFound as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(where, file=sys.stderr, flush=True)  # which stack this acts on, before anything
    try:
        if args.command == "sample":
            return asyncio.run(_sample(settings))
        if args.command == "dedupe":
            return asyncio.run(_dedupe(settings, dry_run=args.dry_run))
        if (args.path is None) == (args.download is None):
            parser.error("give a PATH or --download NAME")
        path = args.path
        if args.download:
            path = fetch(
                dataset_url(args.download, settings.movielens_base_url),
                cache_dir=settings.cache_dir,
            )
        report = asyncio.run(_movielens(settings, path, dry_run=args.dry_run))
        if args.report_json is not None:
            args.report_json.write_text(json.dumps(report))
        return 0
    except (SourceError, DownloadError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
