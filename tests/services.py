"""Real services for the test session: SecantusDB, Redis and a Celery worker.

Each is started here unless the environment points at one (TEST_MONGODB_URL, REDIS_URL).
A service that cannot start fails the session: nothing is skipped.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import redis

from core import processes
from core.security import generate_keyset
from core.settings import Settings
from embedded import stack as embedded


@dataclass
class TestServices:
    settings: Settings
    procs: list[subprocess.Popen] = field(default_factory=list)
    worker: subprocess.Popen | None = None
    worker_log: Path | None = None


def _redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def database_env() -> dict[str, str]:
    """The environment for a test database server: without coverage's variables, which
    would otherwise trace the whole (pure Python) server and slow every query down."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


def start_services(tmp: Path) -> TestServices:
    procs: list[subprocess.Popen] = []
    mongodb_url = os.environ.get("TEST_MONGODB_URL")
    if not mongodb_url:
        port = processes.free_port()
        procs.append(
            embedded.start_secantus(
                storage=":memory:", port=port, log_file=tmp / "secantus.log", env=database_env()
            )
        )
        mongodb_url = f"mongodb://127.0.0.1:{port}"
    redis_url = os.environ.get("REDIS_URL", "")
    if not redis_url or not _redis_answers(redis_url):
        port = processes.free_port()
        procs.append(
            embedded.start_redis(port=port, workdir=tmp / "redis", log_file=tmp / "redis.log")
        )
        redis_url = f"redis://127.0.0.1:{port}/0"
    run_id = uuid.uuid4().hex[:8]
    (tmp / "imports").mkdir()
    settings = Settings(
        environment="test",
        password_cost="test",  # argon2id at a cheap cost: hundreds of accounts per run
        mongodb_url=mongodb_url,
        mongodb_db=f"test_{run_id}",
        redis_url=redis_url,
        data_dir=tmp,
        token_signing_keys=json.dumps(generate_keyset().as_dict(private=True)),
        aggregation_delay=0.05,
        # Small waits where production waits for safety: a drain takes writes 0.2 s old (one
        # server, so a write is visible as soon as it is stamped), and Redis is retried
        # 0.2 s after a failure.
        drain_settle=0.2,
        redis_cooldown=0.2,
        recommender_check=0,  # a model the worker just published is read at once
        similar_min_likes=2,  # the tests' catalogues are small: a film two people like counts
        celery_queue=f"test-{run_id}",
        import_root=tmp / "imports",
        import_stale_after=3.0,
        import_batch_size=1000,
        log_level="WARNING",
        expose_db_calls=True,
        # Tests log many users in from one address; the rate-limit test sets its own limits.
        login_rate_per_ip=100_000,
        login_failures_per_pair=1000,
        login_checks_per_account=1000,
        signup_rate_per_ip=100_000,
        # Every test talks from 127.0.0.1, many at once: budgets and shares do not bind here
        # (tests/api/test_admission.py sets its own).
        admission_budget_address=10**7,
        admission_budget_account=10**7,
        admission_inflight=10_000,
        admission_anonymous_inflight=10_000,
        admission_anonymous_heavy_inflight=10_000,
        # Import URLs point at loopback servers here (and only there).
        import_url_hosts=["127.0.0.1"],
        import_url_allow_private=True,
    )
    return TestServices(settings=settings, procs=procs)


def settings_env(settings: Settings) -> dict[str, str]:
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is None:
            env.pop(name.upper(), None)
            continue
        if hasattr(value, "get_secret_value"):
            value = value.get_secret_value()
        # Lists are read back from the environment as JSON (pydantic-settings).
        plain_list = isinstance(value, list) and all(isinstance(v, str) for v in value)
        env[name.upper()] = json.dumps(value) if plain_list else str(value)
    return env


def start_worker(services: TestServices, tmp: Path) -> None:
    """A real `celery -A workers worker` consuming this session's queue."""
    settings = services.settings
    log_file = tmp / "worker.log"
    proc = processes.spawn(
        embedded.worker_command(settings.celery_queue, "--without-heartbeat"),
        env=settings_env(settings),
        log_file=log_file,
    )
    services.worker, services.worker_log = proc, log_file
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worker exited: {log_file.read_text()[-2000:]}")
        if "ready." in log_file.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise RuntimeError(f"worker did not become ready: {log_file.read_text()[-2000:]}")


def stop_services(services: TestServices) -> None:
    procs = list(services.procs)
    if services.worker is not None:
        procs.append(services.worker)
    processes.stop(procs, timeout=20)
