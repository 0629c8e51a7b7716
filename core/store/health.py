"""Whether the database can write: a heartbeat write, and the free space on its disk."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import MongoClient
from pymongo.errors import (
    ConnectionFailure,
    ExecutionTimeout,
    OperationFailure,
    PyMongoError,
    WTimeoutError,
)

from core.store.profile import server_profile
from models import utcnow

log = logging.getLogger(__name__)
HEARTBEATS = "heartbeats"


async def heartbeat_write(database: Any, who: str | None = None) -> None:
    """One tiny durable write (the client's write concern is journaled): proves the database
    accepts writes now, which a ping does not (a server whose disk failed still answers it)."""
    name = who or f"{socket.gethostname()}:{os.getpid()}"
    await database[HEARTBEATS].update_one({"_id": name}, {"$set": {"at": utcnow()}}, upsert=True)


@dataclass(frozen=True, slots=True)
class DiskSpace:
    free: int
    total: int


async def disk_space(database: Any, fallback: Path | None) -> DiskSpace | None:
    """Free and total bytes of the database's disk: the server's own figures (MongoDB's
    dbStats), else those of the folder `fallback` on the same disk, else None (unknown)."""
    if server_profile().reports_disk:
        stats = await database.command("dbStats")
        if "fsTotalSize" in stats and "fsUsedSize" in stats:
            total = int(stats["fsTotalSize"])
            return DiskSpace(free=total - int(stats["fsUsedSize"]), total=total)
    if fallback is None:
        return None
    try:
        usage = await asyncio.to_thread(shutil.disk_usage, fallback)
    except OSError:
        return None
    return DiskSpace(free=usage.free, total=usage.total)


class DiskWatch:
    """The database disk's free space, read every `every` seconds by one task; `low` while it
    is under `floor` bytes, so writes are refused before the database fails on a full disk."""

    def __init__(self, *, floor: int, every: float, fallback: Path | None) -> None:
        self.floor = floor
        self.every = every
        self.fallback = fallback
        self.space: DiskSpace | None = None
        self.checked_at = 0.0

    @property
    def low(self) -> bool:
        return self.space is not None and self.space.free < self.floor

    async def check(self, database: Any) -> DiskSpace | None:
        """Read the free space now (an unanswered read keeps the last figure)."""
        was_low = self.low
        try:
            self.space = await disk_space(database, self.fallback)
        except PyMongoError:
            return self.space
        self.checked_at = time.monotonic()
        if self.low != was_low:
            level = logging.WARNING if self.low else logging.INFO
            log.log(
                level,
                "database disk %s",
                "low: writes refused" if self.low else "has room again: writes accepted",
                extra={"free": self.space.free if self.space else None, "floor": self.floor},
            )
        return self.space

    async def run(self, database: Any, stop: asyncio.Event) -> None:
        """Check every `every` seconds until `stop` is set."""
        while not stop.is_set():
            await self.check(database)
            try:
                await asyncio.wait_for(stop.wait(), self.every)
            except TimeoutError:
                pass


class WriteProbe:
    """The database's health check: one tiny durable write. A panicked storage engine (a
    full disk) still answers pings but fails every write, and only a restart clears it."""

    def __init__(self, url: str, database: str) -> None:
        self.url = url
        self.database = database
        self._client: MongoClient | None = None

    def __call__(self) -> bool | None:
        if self._client is None:
            self._client = MongoClient(
                self.url, w="majority", journal=True, timeoutMS=2000,
                serverSelectionTimeoutMS=2000, appname="movie-ratings-supervisor",
            )  # fmt: skip
        try:
            self._client[self.database][HEARTBEATS].update_one(
                {"_id": "supervisor"}, {"$set": {"at": utcnow()}}, upsert=True
            )
            return True
        except (ConnectionFailure, ExecutionTimeout, WTimeoutError):
            return None
        except PyMongoError as exc:
            return None if exc.timeout else False


# The server's code for "that user exists already".
USER_EXISTS = 51003


def create_root_user(url: str, user: str, password: str) -> None:
    """Create the server's root user through a connection without credentials (a server
    with no user yet); an existing user (an interrupted first start) is left as it is."""
    client: MongoClient = MongoClient(url, serverSelectionTimeoutMS=10_000)
    try:
        client.admin.command(
            "createUser", user, pwd=password, roles=[{"role": "root", "db": "admin"}]
        )
    except OperationFailure as exc:
        if exc.code != USER_EXISTS:
            raise
    finally:
        client.close()
