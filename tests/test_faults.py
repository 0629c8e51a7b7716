"""Fault injection with real processes: the embedded stack (SecantusDB, redis-server, a
Celery worker and beat, the API) under a burst of ratings, one real fault each (kill -9,
SIGSTOP, Ctrl-C). Each asserts that no acknowledged rating is lost and that every summary
and user stat is exact again within a bound, with no further writes. `make chaos` runs the
same scenarios, larger, and prints the table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import chaos

# Within `make chaos`'s target of 30 s; the tests only need "converges, bounded".
BOUND = 45.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[chaos.ChaosStack]:
    running = chaos.ChaosStack(Path(tmp_path_factory.mktemp("chaos")))
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.mark.parametrize("fault", list(chaos.SCENARIOS))
async def test_fault_loses_nothing_and_heals_without_writes(stack, fault, monkeypatch):
    # A shorter stall than make chaos's: long enough for requests to hit their budget.
    monkeypatch.setitem(
        chaos.SCENARIOS, "SIGSTOP database 10 s", lambda s: chaos.stall_database(s, seconds=5)
    )
    outcome = await chaos.run_scenario(stack, fault, users=10, writes=60, bound=BOUND)
    assert outcome.lost == 0, outcome
    assert outcome.exact_after is not None, outcome
    assert set(outcome.statuses) <= {200, 201, 503, "conn-error"}, outcome  # never a 500
