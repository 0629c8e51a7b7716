"""The Celery application, configured from Settings when Celery first needs its config."""

from __future__ import annotations

import warnings
from typing import Any

from celery import Celery, signals
from celery.exceptions import SecurityWarning

from core.logs import configure_logging
from core.queue import (
    DRAIN_SUMMARIES,
    INDEX_TITLES,
    REFRESH_WEIGHTED,
    REQUEUE_STALE_IMPORTS,
    TRAIN_RECOMMENDER,
    celery_config,
)
from core.settings import Settings

# Celery's multi-line warning at every start as root (a dev container, a CI runner): the
# embedded stack says it once in one line, and the production image runs as a plain user.
warnings.filterwarnings(
    "ignore", message="You're running the worker with superuser", category=SecurityWarning
)

app = Celery("movie-ratings", include=["workers.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **kwargs: Any) -> None:
    settings = Settings()
    sender.conf.update(celery_config(settings))
    # Each periodic task expires after its own interval: one that waited that long in the
    # queue (the workers were busy with an import) is superseded by the next, rather than
    # dozens of them running back to back on a database that has just been freed.
    every = {
        "refresh-weighted-scores": (REFRESH_WEIGHTED, settings.weighted_refresh_interval),
        "requeue-stale-imports": (REQUEUE_STALE_IMPORTS, settings.import_sweep_interval),
        # The intents are the record; this is what finds them when no write queues a drain
        # (broker was down, a worker died holding one, a crash came before the enqueue).
        "drain-summaries": (DRAIN_SUMMARIES, settings.drain_interval),
        # Trains only when a model is due (an import, enough new likes, none yet).
        "train-recommender": (TRAIN_RECOMMENDER, settings.recommender_interval),
    }
    sender.conf.beat_schedule = {
        name: {"task": task, "schedule": interval, "options": {"expires": interval}}
        for name, (task, interval) in every.items()
    }
    sender.conf.beat_schedule["train-recommender"]["kwargs"] = {"only_if_due": True}


@signals.worker_ready.connect
def _drain_on_start(sender: Any = None, **kwargs: Any) -> None:
    # A worker that starts (after a crash, an outage, a deploy) drains what was left at once.
    app.send_task(DRAIN_SUMMARIES)
    app.send_task(INDEX_TITLES)  # movies stored before title search was added
    app.send_task(TRAIN_RECOMMENDER, kwargs={"only_if_due": True})  # none yet, or stale


@signals.setup_logging.connect
def _logging(loglevel: Any = None, **kwargs: Any) -> None:
    configure_logging(loglevel or Settings().log_level)
