"""Thin tasks: take ids, stay idempotent under acks_late, retry explicitly, call services."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

from beanie import PydanticObjectId
from bson.errors import InvalidId
from pymongo.errors import PyMongoError
from redis.exceptions import RedisError

from api.queue import (
    AGGREGATE_MOVIE,
    AGGREGATE_USER,
    PURGE_MOVIE_RATINGS,
    RECONCILE,
    REFRESH_WEIGHTED,
    REQUEUE_STALE_IMPORTS,
    RUN_IMPORT,
)
from api.services import aggregation
from seed import jobs
from workers.app import app
from workers.runtime import run, start_runtime

log = logging.getLogger(__name__)
TRANSIENT = (PyMongoError, RedisError, OSError)
T = TypeVar("T")
RETRY = {"acks_late": True, "bind": True, "max_retries": 8}


def _object_id(value: str) -> PydanticObjectId | None:
    try:
        return PydanticObjectId(value)
    except (InvalidId, TypeError):
        log.error("task got a malformed id; dropped", extra={"id": value})
        return None


def _run(task: Any, coro: Coroutine[Any, Any, T]) -> T:
    """Run a task's coroutine; transient database or broker errors retry with backoff."""
    try:
        return run(coro)
    except TRANSIENT as exc:
        countdown = min(2**task.request.retries * 0.5, 30)
        log.warning("transient failure; retrying", extra={"task": task.name, "in": countdown})
        raise task.retry(exc=exc, countdown=countdown) from exc


@app.task(name=AGGREGATE_MOVIE, **RETRY)
def aggregate_movie(self: Any, movie_id: str) -> None:
    """Recompute one movie's summary from its ratings."""
    oid = _object_id(movie_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> None:
        await rt.queue.claim("movie", movie_id)
        found = await aggregation.recompute_movie_summary(
            movie_id=oid, prior_votes=rt.settings.rating_prior_votes
        )
        if found:
            await rt.cache.movies_changed([movie_id])
        log.info("movie summary recomputed", extra={"movie_id": movie_id, "stored": found})

    _run(self, work())


@app.task(name=AGGREGATE_USER, **RETRY)
def aggregate_user(self: Any, user_id: str) -> None:
    """Recompute one user's rating stats from their ratings."""
    oid = _object_id(user_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> None:
        await rt.queue.claim("user", user_id)
        found = await aggregation.recompute_user_stats(user_id=oid)
        if found:
            await rt.cache.users_changed([user_id])
        log.info("user stats recomputed", extra={"user_id": user_id, "stored": found})

    _run(self, work())


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

    _run(self, work())


@app.task(name=REFRESH_WEIGHTED, **RETRY)
def refresh_weighted(self: Any) -> None:
    """Refresh the global mean C and every weighted score (beat runs this periodically)."""
    rt = start_runtime()

    async def work() -> None:
        if await aggregation.refresh_weighted_scores(prior_votes=rt.settings.rating_prior_votes):
            await rt.cache.everything_changed()

    _run(self, work())


@app.task(name=RECONCILE, **RETRY)
def reconcile(self: Any) -> None:
    """Recompute the summaries whose aggregation could not be queued (beat runs this)."""
    rt = start_runtime()

    async def work() -> None:
        done = await aggregation.reconcile(prior_votes=rt.settings.rating_prior_votes)
        if done["movie"] or done["user"]:
            # recompute_many may also have moved C, and with it every weighted score.
            await rt.cache.everything_changed()

    _run(self, work())


@app.task(name=RUN_IMPORT, **RETRY)
def run_import(self: Any, job_id: str) -> None:
    """Run one import job; a redelivered job (lost worker) resumes idempotently."""
    oid = _object_id(job_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> str | None:
        try:
            return await jobs.run_job(job_id=oid, settings=rt.settings)
        finally:
            await rt.cache.everything_changed()  # even a failed import wrote some batches

    try:
        status = _run(self, work())
    except jobs.JobBusy as exc:
        # A redelivery while the first worker may still be alive: look again once its
        # heartbeat would have gone stale.
        raise self.retry(exc=exc, countdown=rt.settings.import_stale_after, max_retries=20) from exc
    log.info("import job ended", extra={"job": job_id, "status": status})


@app.task(name=REQUEUE_STALE_IMPORTS, **RETRY)
def requeue_stale_imports(self: Any) -> None:
    """Queue again the running jobs whose worker stopped reporting (beat runs this)."""
    rt = start_runtime()

    async def work() -> list[str]:
        stale = await jobs.stale_jobs(stale_after=rt.settings.import_stale_after * 4)
        for job_id in stale:
            await rt.queue.send(RUN_IMPORT, job_id)
        return stale

    stale = _run(self, work())
    if stale:
        log.warning("stale import jobs queued again", extra={"jobs": stale})
