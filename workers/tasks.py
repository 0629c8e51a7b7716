"""Thin tasks: take ids, stay idempotent under acks_late, retry through Celery, call services."""

from __future__ import annotations

import logging
from typing import Any

from beanie import PydanticObjectId
from bson.errors import InvalidId
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from core.queue import (
    AGGREGATE_MOVIE,
    AGGREGATE_USER,
    PURGE_MOVIE_RATINGS,
    RECONCILE,
    REFRESH_WEIGHTED,
    REQUEUE_STALE_IMPORTS,
    RUN_IMPORT,
)
from core.services import aggregation, imports
from seed.movielens import open_job_release
from workers.app import app
from workers.runtime import run, start_runtime

log = logging.getLogger(__name__)
TRANSIENT = (PyMongoError, RedisError, OSError)
# Transient database or broker errors retry with Celery's exponential backoff (1, 2, 4 … s,
# at most 30 s, jittered), up to 8 times.
RETRY = {
    "acks_late": True,
    "bind": True,
    "autoretry_for": TRANSIENT,
    "retry_backoff": True,
    "retry_backoff_max": 30,
    "max_retries": 8,
}


def _object_id(value: str) -> PydanticObjectId | None:
    try:
        return PydanticObjectId(value)
    except (InvalidId, TypeError):
        log.error("task got a malformed id; dropped", extra={"id": value})
        return None


@app.task(name=AGGREGATE_MOVIE, **RETRY)
def aggregate_movie(self: Any, movie_id: str) -> None:
    """Recompute one movie's summary from its ratings."""
    oid = _object_id(movie_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> None:
        await rt.queue.release_pending("movie", movie_id)
        found = await aggregation.recompute_movie_summary(
            movie_id=oid, prior_votes=rt.settings.rating_prior_votes
        )
        if found:
            await rt.cache.movies_changed([movie_id])
        log.info("movie summary recomputed", extra={"movie_id": movie_id, "stored": found})

    run(work())


@app.task(name=AGGREGATE_USER, **RETRY)
def aggregate_user(self: Any, user_id: str) -> None:
    """Recompute one user's rating stats from their ratings."""
    oid = _object_id(user_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> None:
        await rt.queue.release_pending("user", user_id)
        found = await aggregation.recompute_user_stats(user_id=oid)
        if found:
            await rt.cache.users_changed([user_id])
        log.info("user stats recomputed", extra={"user_id": user_id, "stored": found})

    run(work())


@app.task(name=PURGE_MOVIE_RATINGS, **RETRY)
def purge_movie_ratings(self: Any, movie_id: str) -> None:
    """Delete a deleted movie's ratings, then refresh the stats of everyone who rated it."""
    oid = _object_id(movie_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> None:
        user_ids = await aggregation.purge_movie_ratings(movie_id=oid)
        await rt.queue.schedule_aggregation(user_ids=user_ids)
        log.info("movie ratings purged", extra={"movie_id": movie_id, "users": len(user_ids)})

    run(work())


@app.task(name=REFRESH_WEIGHTED, **RETRY)
def refresh_weighted(self: Any) -> None:
    """Refresh the global mean C and every weighted score (beat runs this periodically)."""
    rt = start_runtime()

    async def work() -> None:
        if await aggregation.refresh_weighted_scores(prior_votes=rt.settings.rating_prior_votes):
            await rt.cache.everything_changed()

    run(work())


@app.task(name=RECONCILE, **RETRY)
def reconcile(self: Any) -> None:
    """Recompute the summaries whose aggregation could not be queued (beat runs this)."""
    rt = start_runtime()

    async def work() -> None:
        done = await aggregation.reconcile(prior_votes=rt.settings.rating_prior_votes)
        if done["movie"] or done["user"]:
            # recompute_many may also have moved C, and with it every weighted score.
            await rt.cache.everything_changed()

    run(work())


@app.task(name=RUN_IMPORT, **RETRY)
def run_import(self: Any, job_id: str) -> None:
    """Run one import job; a redelivered job (lost worker) resumes idempotently."""
    oid = _object_id(job_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> str | None:
        try:
            return await imports.run_job(
                job_id=oid, settings=rt.settings, open_release=open_job_release
            )
        finally:
            await rt.cache.everything_changed()  # even a failed import wrote some batches

    try:
        status = run(work())
    except imports.JobBusy as exc:
        # A redelivery while the first worker may still be alive: look again once its
        # heartbeat would have gone stale.
        raise self.retry(exc=exc, countdown=rt.settings.import_stale_after, max_retries=20) from exc
    log.info("import job ended", extra={"job": job_id, "status": status})


@app.task(name=REQUEUE_STALE_IMPORTS, **RETRY)
def requeue_stale_imports(self: Any) -> None:
    """Queue again the running jobs whose worker stopped reporting (beat runs this)."""
    rt = start_runtime()

    async def work() -> list[str]:
        stale = await imports.stale_jobs(stale_after=rt.settings.import_stale_after * 4)
        for job_id in stale:
            await rt.queue.send(RUN_IMPORT, job_id)
        return stale

    stale = run(work())
    if stale:
        log.warning("stale import jobs queued again", extra={"jobs": stale})
