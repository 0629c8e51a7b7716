"""Thin tasks: take ids, stay idempotent under acks_late, retry through Celery, call services."""

from __future__ import annotations

import logging
from typing import Any

from redis.exceptions import RedisError

from core import summaries
from core.imports import jobs as imports
from core.load import api_busy
from core.queue import (
    DRAIN_SUMMARIES,
    INDEX_TITLES,
    REFRESH_WEIGHTED,
    REQUEUE_STALE_IMPORTS,
    RUN_IMPORT,
    TRAIN_RECOMMENDER,
)
from core.services import search, training
from core.store import StoreError
from models import PydanticObjectId, parse_id
from workers.app import app
from workers.runtime import run, start_runtime

log = logging.getLogger(__name__)
TRANSIENT = (StoreError, RedisError, OSError)
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
    parsed = parse_id(value)
    if parsed is None:
        log.error("task got a malformed id; dropped", extra={"id": value})
    return parsed


@app.task(name=DRAIN_SUMMARIES, **RETRY)
def drain_summaries(self: Any) -> None:
    """Recompute what the recorded intents name, then clear them (writes and beat queue it)."""
    rt = start_runtime()

    async def work() -> summaries.DrainReport | None:
        async with rt.queue.drain_turn() as turn:
            if turn is None:
                return None
            await rt.queue.drain_started()
            return await summaries.drain(
                prior_votes=rt.settings.rating_prior_votes,
                batch=rt.settings.drain_batch,
                duty=rt.settings.drain_duty,
                settle=rt.settings.drain_settle,
                changed=rt.cache.summaries_changed,
                keep_going=turn.held,
                others_busy=api_busy(
                    rt.redis,
                    prefix=f"{rt.settings.mongodb_db}:",
                    threshold=rt.settings.drain_idle_below,
                ),
            )

    report = run(work())
    if report is None:
        # Another drain runs; it may have read the stamps before this task's write landed.
        # Look again shortly (the queued-key stays set: writes meanwhile need no new task).
        raise self.retry(countdown=1.0, max_retries=60)
    if not report.empty:
        log.info(
            "summaries drained",
            extra={
                "movies": [str(i) for i in report.movies],
                "users": len(report.users),
                "purged_movies": [str(i) for i in report.purged_movies],
                "taken": report.taken,
                "rounds": report.rounds,
            },
        )


@app.task(name=REFRESH_WEIGHTED, **RETRY)
def refresh_weighted(self: Any) -> None:
    """Publish a new global mean C when it moved beyond tolerance, and rewrite the weighted
    scores in small batches, each invalidating only its own movies (beat runs this)."""
    rt = start_runtime()

    async def work() -> int:
        return await summaries.refresh_weighted_scores(
            prior_votes=rt.settings.rating_prior_votes,
            tolerance=rt.settings.weighted_mean_tolerance,
            changed=rt.cache.movies_changed,
            pause=0.01,
            # C comes from the summaries: only while drains keep up with the writes.
            max_lag=2 * rt.settings.drain_interval + rt.settings.drain_settle,
        )

    run(work())


@app.task(name=INDEX_TITLES, **RETRY)
def index_titles(self: Any) -> None:
    """Give movies stored before title search its fields (each worker start sends this)."""
    rt = start_runtime()
    indexed = run(search.index_titles(cache=rt.cache))
    if indexed:
        log.info("titles indexed for search", extra={"movies": indexed})


@app.task(name=RUN_IMPORT, **RETRY)
def run_import(self: Any, job_id: str) -> None:
    """Run one import job; a redelivered job (lost worker) resumes idempotently."""
    oid = _object_id(job_id)
    if oid is None:
        return
    rt = start_runtime()

    async def work() -> str | None:
        try:
            return await imports.run_job(job_id=oid, settings=rt.settings, cache=rt.cache)
        finally:
            await rt.cache.everything_changed()  # even a failed import wrote some batches

    try:
        status = run(work())
    except imports.JobBusy as exc:
        # A redelivery while the first worker may still be alive: look again once its
        # heartbeat would have gone stale.
        raise self.retry(exc=exc, countdown=rt.settings.import_stale_after, max_retries=20) from exc
    if status == "queued":
        return  # waits behind another import, which sends it again when it ends
    log.info("import job ended", extra={"job": job_id, "status": status})
    if status is not None:
        # Jobs that waited for this one's lease go now, not at beat's next sweep.
        run(imports.resend_unsent(queue=rt.queue, older_than=0))
    if status is not None:
        # Trains when the import changed ratings (even a failed one may have written some).
        app.send_task(TRAIN_RECOMMENDER, kwargs={"only_if_due": True})


@app.task(name=TRAIN_RECOMMENDER, **RETRY)
def train_recommender(self: Any, only_if_due: bool = False) -> None:
    """Train the recommendation model from every like and publish it as the next version:
    when asked outright, or with `only_if_due` when one is (beat every
    RECOMMENDER_INTERVAL seconds, an import's end, a worker's start)."""
    rt = start_runtime()
    why, model = run(
        training.train_if_due(
            settings=rt.settings,
            op_budget=rt.settings.mongodb_worker_timeout,
            force=not only_if_due,
        )
    )
    if model is not None:
        log.info(
            "recommender trained",
            extra={
                "version": model.version,
                "why": why,
                "likes": model.likes,
                "seconds": model.seconds,
            },
        )


@app.task(name=REQUEUE_STALE_IMPORTS, **RETRY)
def requeue_stale_imports(self: Any) -> None:
    """Queue again the running jobs whose worker stopped reporting, and the queued ones whose
    message went out long ago and never ran (beat runs this): accepted work always runs."""
    rt = start_runtime()

    async def work() -> tuple[list[str], list[str]]:
        stale = await imports.stale_jobs(stale_after=rt.settings.import_stale_after * 4)
        for job_id in stale:
            await rt.queue.send(RUN_IMPORT, job_id)
        unsent = await imports.resend_unsent(
            queue=rt.queue, older_than=rt.settings.import_stale_after
        )
        return stale, unsent

    stale, unsent = run(work())
    if stale:
        log.warning("stale import jobs queued again", extra={"jobs": stale})
    if unsent:
        log.warning("queued import jobs sent again", extra={"jobs": unsent})
