"""Storage trouble: which database errors are a 503, durable writes, the disk watch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    OperationFailure,
    WriteConcernError,
)

from core import store as core_db
from core.store.health import HEARTBEATS, DiskSpace, DiskWatch, disk_space, heartbeat_write


@pytest.mark.parametrize(
    ("error", "trouble"),
    [
        (OperationFailure("internal server error", code=1), True),  # a panicked SecantusDB
        (OperationFailure("No space left on device", code=14031), True),
        (OperationFailure("not primary", code=10107), True),
        (WriteConcernError("waiting for replication timed out", code=64), True),
        (AutoReconnect("connection closed"), True),
        (BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}), True),
        (BulkWriteError({"writeErrors": [{"code": 14031, "index": 0}]}), True),
        (BulkWriteError({"writeErrors": [{"code": 11000, "index": 0}]}), False),
        (DuplicateKeyError("E11000", code=11000), False),
        (OperationFailure("unknown operator: $foo", code=2), False),  # our bug: a 500
    ],
)
def test_storage_trouble_is_told_from_a_bad_request(error: Any, trouble: bool) -> None:
    assert core_db.unavailable(error) is trouble


async def test_a_heartbeat_is_one_small_stored_write(db):
    await heartbeat_write(db, "probe")
    await heartbeat_write(db, "probe")
    assert await db[HEARTBEATS].count_documents({"_id": "probe"}) == 1


async def test_free_space_comes_from_the_folder_when_the_server_gives_none(db, tmp_path: Path):
    # SecantusDB's dbStats has no fsTotalSize: the folder on the database's disk tells.
    space = await disk_space(db, tmp_path)
    assert space is not None and 0 < space.free <= space.total
    if not core_db.server_profile().reports_disk:  # against MongoDB (CI), dbStats answers
        assert await disk_space(db, None) is None
        assert await disk_space(db, tmp_path / "missing") is None


async def test_writes_are_refused_only_while_the_disk_is_under_the_floor(db, tmp_path: Path):
    watch = DiskWatch(floor=0, every=1, fallback=tmp_path)
    assert not watch.low  # nothing read yet: unknown is not low
    await watch.check(db)
    assert watch.space is not None and not watch.low
    watch.floor = watch.space.free * 2
    await watch.check(db)
    assert watch.low
    watch.space = DiskSpace(free=10, total=100)
    watch.floor = 5
    assert not watch.low


class StatsOnly:
    """A database whose dbStats reports its disk, as MongoDB's does."""

    async def command(self, name: str) -> dict[str, Any]:
        assert name == "dbStats"
        return {"fsTotalSize": 1000, "fsUsedSize": 900}


async def test_a_server_that_reports_its_disk_is_asked_and_secantusdb_is_not(tmp_path: Path):
    before = core_db.server_profile()
    try:
        core_db.use_profile(core_db.MONGODB)
        assert await disk_space(StatsOnly(), tmp_path) == DiskSpace(free=100, total=1000)
        # SecantusDB's dbStats scans every collection: the folder answers, no dbStats is sent.
        core_db.use_profile(core_db.SECANTUSDB)
        space = await disk_space(StatsOnly(), tmp_path)
        assert space is not None and space.total > 1000
    finally:
        core_db.use_profile(before)
