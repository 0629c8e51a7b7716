"""The Celery application, configured from Settings when Celery first needs its config."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

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

app = Celery("movie-ratings", include=["workers.tasks"])


@app.on_configure.connect
def _configure(sender: Celery, **kwargs: Any) -> None:
    settings = Settings()
    sender.conf.update(celery_config(settings))
    sender.conf.beat_schedule = {
        "refresh-weighted-scores": {
            "task": REFRESH_WEIGHTED,
            "schedule": settings.weighted_refresh_interval,
        },
        "requeue-stale-imports": {
            "task": REQUEUE_STALE_IMPORTS,
            "schedule": settings.import_sweep_interval,
        },
        # The intents are the record; this is what finds them when no write queues a drain
        # (broker was down, a worker died holding one, a crash came before the enqueue).
        "drain-summaries": {"task": DRAIN_SUMMARIES, "schedule": settings.drain_interval},
        "train-recommender": {
            "task": TRAIN_RECOMMENDER,
            "schedule": settings.recommender_interval,
        },
    }


@signals.worker_ready.connect
def _drain_on_start(sender: Any = None, **kwargs: Any) -> None:
    # A worker that starts (after a crash, an outage, a deploy) drains what was left at once.
    app.send_task(DRAIN_SUMMARIES)
    app.send_task(INDEX_TITLES)  # movies stored before title search was added
    app.send_task(TRAIN_RECOMMENDER, kwargs={"only_if_missing": True})


@signals.setup_logging.connect
def _logging(loglevel: Any = None, **kwargs: Any) -> None:
    configure_logging(loglevel or Settings().log_level)
