"""A worker's start says nothing that alarms without cause."""

from __future__ import annotations

from tests.conftest import eventually, worker_log


async def test_a_worker_starts_without_alarming_noise(worker, db):
    # Its start asks for a model; reading the likes loads pymongoarrow, whose Cython types
    # used to warn dozens of times about pyarrow's sizes.
    async def looked() -> bool:
        return any(
            "recommender.train" in line and "succeeded" in line
            for line in worker_log(worker).splitlines()
        )

    await eventually(looked, timeout=30)
    log = worker_log(worker)
    assert "size changed, may indicate binary incompatibility" not in log
    assert "superuser privileges" not in log
