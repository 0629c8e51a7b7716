"""Fenced leases in MongoDB: at most one holder does a piece of work at a time.

A lease is granted when it is free, expired, or already the asker's; every grant moves its
`fence` on. The holder renews it while it works and confirms it before each step that
writes: a holder that stalled (SIGSTOP, a long pause) past its expiry finds another fence
there and stops before writing again. Plain updates with a filter, no findAndModify, so the
same code is cheap on every server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from typing import Any

from pymongo.errors import DuplicateKeyError

from models import Lease, utcnow

log = logging.getLogger(__name__)
# One lease for every MovieLens release: imports write one at a time.
IMPORT_LEASE = "import:movielens"


class LeaseBusy(Exception):
    """Someone else holds the lease."""

    def __init__(self, name: str, holder: str) -> None:
        super().__init__(f"{name} is held by {holder}")
        self.name = name
        self.holder = holder


class LeaseLost(Exception):
    """The lease expired and was granted again (to another holder, or another attempt)."""


class FencedLease:
    """One holder's lease on `name`, valid `ttl` seconds past its last renewal."""

    def __init__(self, name: str, *, holder: str, ttl: float) -> None:
        self.name = name
        self.holder = holder
        self.ttl = ttl
        self.fence: int | None = None

    def _expiry(self) -> datetime:
        return utcnow() + timedelta(seconds=self.ttl)

    async def acquire(self) -> int:
        """Take the lease (LeaseBusy when another holder's is still valid); its fence."""
        collection = Lease.get_pymongo_collection()
        try:
            await collection.insert_one(
                {"_id": self.name, "holder": self.holder, "fence": 1, "expires_at": self._expiry()}
            )
        except DuplicateKeyError:
            grant: dict[str, Any] = {
                "$set": {"holder": self.holder, "expires_at": self._expiry()},
                "$inc": {"fence": 1},
            }
            taken = await collection.update_one(
                {"_id": self.name, "expires_at": {"$lt": utcnow()}}, grant
            )
            if not taken.matched_count:
                taken = await collection.update_one(
                    {"_id": self.name, "holder": self.holder}, grant
                )
            if not taken.matched_count:
                doc = await collection.find_one({"_id": self.name}, {"holder": 1})
                raise LeaseBusy(self.name, doc["holder"] if doc else "someone") from None
        doc = await collection.find_one({"_id": self.name}, {"holder": 1, "fence": 1})
        if doc is None or doc["holder"] != self.holder:
            raise LeaseBusy(self.name, doc["holder"] if doc else "someone")
        self.fence = int(doc["fence"])
        return self.fence

    def _mine(self) -> dict[str, Any]:
        return {"_id": self.name, "holder": self.holder, "fence": self.fence}

    async def renew(self) -> None:
        """Push the expiry on; LeaseLost when the lease is no longer this grant."""
        renewed = await Lease.get_pymongo_collection().update_one(
            self._mine(), {"$set": {"expires_at": self._expiry()}}
        )
        if not renewed.matched_count:
            raise LeaseLost(self.name)

    async def confirm(self) -> None:
        """LeaseLost unless this grant still holds the lease (before each write step)."""
        if await Lease.get_pymongo_collection().find_one(self._mine(), {"_id": 1}) is None:
            raise LeaseLost(self.name)

    async def release(self) -> None:
        """Give the lease up (only this grant's)."""
        await Lease.get_pymongo_collection().delete_one(self._mine())

    @asynccontextmanager
    async def held(self) -> AsyncIterator[FencedLease]:
        """Acquire, renew every ttl/4 while the block runs, release after it."""
        await self.acquire()

        async def keep() -> None:
            while True:
                await asyncio.sleep(self.ttl / 4)
                try:
                    await self.renew()
                except LeaseLost:
                    log.warning("lease lost", extra={"lease": self.name, "holder": self.holder})
                    return
                except Exception:  # a database hiccup: the next renewal tries again
                    log.warning("lease renewal failed", extra={"lease": self.name})

        renewing = asyncio.create_task(keep())
        try:
            yield self
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
            with contextlib.suppress(Exception):
                await self.release()


async def holder_of(name: str) -> str | None:
    """Who holds a lease now (None: free or expired)."""
    doc = await Lease.get_pymongo_collection().find_one({"_id": name})
    if doc is None or doc["expires_at"].replace(tzinfo=utcnow().tzinfo) < utcnow():
        return None
    return str(doc["holder"])


async def is_held(name: str) -> bool:
    """Whether someone holds the lease now (an indexed _id read)."""
    found = await Lease.get_pymongo_collection().find_one(
        {"_id": name, "expires_at": {"$gt": utcnow()}}, {"_id": 1}
    )
    return found is not None
