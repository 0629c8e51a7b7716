"""Fault injection with real processes: the embedded stack (SecantusDB, redis-server, a
Celery worker and beat, the API) under a burst of ratings, one real fault each (kill -9,
SIGSTOP, a full disk, Ctrl-C), and imports under faults (two at once, live ratings during
one, a lost queued message). Each asserts that no acknowledged rating is lost, no rating is
orphaned, and every summary and user stat (weighted scores included) is exact again within
a bound, with no further writes. `make chaos` runs the same scenarios, larger, and prints
the table."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench import chaos

# Within `make chaos`'s target of 30 s; the tests only need "converges, bounded".
BOUND = 45.0
# Shorter stalls than make chaos's: long enough for requests to hit their budget.
SHORTER = {
    "SIGSTOP database 10 s": lambda s: chaos.stall_database(s, seconds=5),
    "SIGSTOP worker 60 s": lambda s: chaos.stall_worker(s, seconds=10),
    "full disk 10 s": lambda s: chaos.fill_disk(s, seconds=5),
}
SHARED = [f for f in chaos.SCENARIOS if f not in chaos.DISK_MB]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[chaos.ChaosStack]:
    running = chaos.ChaosStack(Path(tmp_path_factory.mktemp("chaos")))
    running.start()
    try:
        yield running
    finally:
        running.close()


@pytest.fixture
def own_stack(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[chaos.ChaosStack]:
    """A stack of its own: on a small disk for the full-disk fault."""
    running = chaos.ChaosStack(tmp_path, disk_mb=chaos.DISK_MB.get(request.param))
    try:
        running.start()
        yield running
    finally:
        running.close()


def _faster(monkeypatch: pytest.MonkeyPatch) -> None:
    for fault, shorter in SHORTER.items():
        monkeypatch.setitem(chaos.SCENARIOS, fault, shorter)


def _held(outcome: chaos.Outcome) -> None:
    assert outcome.lost == 0, outcome
    assert outcome.orphans == 0, outcome
    assert outcome.exact_after is not None, outcome
    assert not outcome.back_measured or outcome.back_after is not None, outcome
    answers = {s for s in outcome.statuses if not str(s).startswith("job ")}
    assert answers <= {200, 201, 503, "conn-error"}, outcome  # never a 500


@pytest.mark.parametrize("fault", SHARED)
async def test_fault_loses_nothing_and_heals_without_writes(stack, fault, monkeypatch):
    _faster(monkeypatch)
    rounds = 2 if fault in chaos.ROUNDS else 1  # make chaos kills the database five times
    outcome = await chaos.run_scenario(
        stack, fault, users=10, writes=60, bound=BOUND, rounds=rounds
    )
    _held(outcome)


@pytest.mark.parametrize("own_stack", list(chaos.DISK_MB), indirect=True)
async def test_a_full_disk_is_503_loses_nothing_and_comes_back_alone(own_stack, monkeypatch):
    _faster(monkeypatch)
    fault = "full disk 10 s"
    outcome = await chaos.run_scenario(own_stack, fault, users=10, writes=60, bound=BOUND)
    _held(outcome)
    assert outcome.statuses[503] > 0, outcome  # refused while full, not failed
    assert outcome.back_after is not None and outcome.back_after < BOUND


@pytest.mark.parametrize("scenario", list(chaos.IMPORT_SCENARIOS))
async def test_imports_under_faults_write_each_rating_once_and_converge(scenario, tmp_path):
    stack = chaos.ChaosStack(tmp_path)
    try:
        stack.start()
        release = chaos.place_release(stack, None, synth_ratings=3000)
        run = chaos.IMPORT_SCENARIOS[scenario]
        outcome = await run(stack, release, bound=BOUND, users=10, writes=60)
    finally:
        stack.close()
    jobs = {s for s in outcome.statuses if str(s).startswith("job ")}
    assert jobs == {"job succeeded"}, outcome
    _held(outcome)
