"""The Celery application, configured from Settings when Celery first needs its config."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from core.logs import configure_logging
from core.queue import RECONCILE, REFRESH_WEIGHTED, REQUEUE_STALE_IMPORTS, celery_config
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
        "requeue-stale-imports": {"task": REQUEUE_STALE_IMPORTS, "schedule": 60.0},
        "reconcile-stale-summaries": {"task": RECONCILE, "schedule": settings.reconcile_interval},
    }


@signals.setup_logging.connect
def _logging(loglevel: Any = None, **kwargs: Any) -> None:
    configure_logging(loglevel or Settings().log_level)
