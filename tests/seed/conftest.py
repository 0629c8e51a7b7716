"""Starts the ml-latest-small import at collection when its test is selected (see ml_small)."""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ML_TEST = "test_ml_latest_small_exact_counts_and_idempotent"
ML_IMPORT = pytest.StashKey[tuple[subprocess.Popen, Path]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    if any(item.name == ML_TEST for item in session.items):
        work = Path(tempfile.mkdtemp(prefix="ml-small-"))
        log = open(work / "import.log", "wb")
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.seed.ml_small", str(work)], stdout=log, stderr=log
        )
        session.config.stash[ML_IMPORT] = (proc, work)


def pytest_sessionfinish(session: pytest.Session) -> None:
    started = session.config.stash.get(ML_IMPORT, None)
    if started is not None and started[0].poll() is None:
        started[0].kill()
        started[0].wait()


@pytest.fixture
def ml_small_import(request: pytest.FixtureRequest) -> tuple[subprocess.Popen, Path]:
    return request.config.stash[ML_IMPORT]
