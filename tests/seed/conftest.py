"""Starts the ml-latest-small import at collection when its test is selected (see ml_small)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

ML_TESTS = {
    "test_ml_latest_small_exact_counts_and_idempotent",
    "test_ml_latest_small_searches_find_the_film_in_the_top_3",
    "test_ml_latest_small_similar_lists_are_believable",
}
ML_IMPORT = pytest.StashKey[tuple[subprocess.Popen, Path]]()


def pytest_collection_finish(session: pytest.Session) -> None:
    from tests.seed.ml_small import find_ml_small

    if find_ml_small() is None:
        return  # the test says how to get the data (and fails when CI is set)
    if any(item.name in ML_TESTS for item in session.items):
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
    from tests.seed.ml_small import HOW_TO_GET

    started = request.config.stash.get(ML_IMPORT, None)
    if started is None:
        if os.environ.get("CI"):
            pytest.fail(f"{HOW_TO_GET} (required when CI is set)")
        pytest.skip(HOW_TO_GET)
    return started
