"""MongoDB connection and Beanie initialisation, shared by the API and the workers."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pymongo
from beanie import init_beanie
from motor.motor_asyncio import AsyncIOMotorClient, AsyncIOMotorCollection, AsyncIOMotorDatabase
from pymongo import WriteConcern, monitoring
from pymongo.errors import (
    BulkWriteError,
    ConnectionFailure,
    OperationFailure,
    PyMongoError,
    WriteConcernError,
)

from core.settings import Settings
from models import DOCUMENT_MODELS

# The commands sent on behalf of the current request (motor copies the context into the
# thread that talks to the server, so the listener sees the request's counter).
db_calls_var: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "db_calls", default=None
)


class CommandCounter(monitoring.CommandListener):
    """Counts MongoDB round trips per request (pymongo's command monitoring API)."""

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        calls = db_calls_var.get()
        if calls is not None:
            calls[0] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@dataclass(frozen=True, slots=True)
class ServerProfile:
    """What is cheap on the database server in use: the one switch every workaround for the
    embedded server (SecantusDB) reads. MongoDB gets the plain form. Figures from
    `make bench-embedded` (python -m bench.embedded_server), on SecantusDB."""

    name: str
    in_list_max: int  # the longest $in list sent in one query
    write_batch: int  # the most writes sent in one bulk command by background work
    match_batch: int  # the most ids one query matches when each id stands for many documents
    find_and_modify: bool  # change-and-read in one findAndModify, else a write plus a read
    reports_disk: bool  # dbStats gives the disk's size and use (cheaply), else a folder does


MONGODB = ServerProfile(
    "mongodb",
    in_list_max=10_000,
    write_batch=1000,
    match_batch=1000,
    find_and_modify=True,
    reports_disk=True,
)
# SecantusDB matches $in by scanning the list for every document (2,000 ids at once: 44 s;
# in chunks of 100: 2.1 s). It runs one command at a time, so a drain's bulk write of 500
# summaries (~5 ms each on disk) held every API request for 2.5 s; 100 hold it ~0.5 s.
# findAndModify on an existing document takes ~85 ms against ~3.3 ms for update_one plus
# find_one. (A $unionWith that reads a movie and a rating in one trip scans the whole other
# collection: 168 ms with 10k movies, against 1.8 ms for two finds.) The list scan is paid per
# matched document too: histograms of 200 movies (30 ratings each) took 0.65 s in $in chunks
# of 100, 0.31 s one movie per query, 0.22 s in chunks of 10 (bench-embedded).
# Its dbStats counts and sizes every collection (a scan) and says nothing of the disk.
SECANTUSDB = ServerProfile(
    "secantusdb",
    in_list_max=100,
    write_batch=100,
    match_batch=10,
    find_and_modify=False,
    reports_disk=False,
)
_profile = SECANTUSDB  # the cautious default until connect() has asked the server


def server_profile() -> ServerProfile:
    """The profile of the server this process connected to."""
    return _profile


def use_profile(profile: ServerProfile) -> None:
    """Set the profile (connect() does; tests force one to cover both code paths)."""
    global _profile
    _profile = profile


STARTUP_TIMEOUT = 600.0
# Seconds a client is asked to wait after a 503 caused by the database.
RETRY_AFTER = 5

# Every write is acknowledged only once it is in the journal on disk (and, on a replica set,
# on a majority of members): an answer the API sends after it survives a crash of any part.
DURABLE = WriteConcern(w="majority", j=True)

# Server answers that say the database cannot serve now, not that the request was wrong.
STORAGE_TROUBLE_CODES = frozenset(
    {
        1,  # InternalError: what SecantusDB answers once its storage engine has panicked
        6, 7, 89, 9001,  # HostUnreachable, HostNotFound, NetworkTimeout, SocketException
        50, 262,  # MaxTimeMSExpired, ExceededTimeLimit
        64, 100,  # WriteConcernFailed, UnsatisfiableWriteConcern
        91, 189, 10107, 11600, 11602, 13435, 13436,  # shutting down, stepped down, not primary
        112,  # WriteConflict
        14031,  # OutOfDiskSpace
    }
)  # fmt: skip


def unavailable(exc: PyMongoError) -> bool:
    """Storage trouble, not a bad query: the database was unreachable, ran out of time, or
    could not write (a full disk, a panicked storage engine, no primary). A 503 with
    Retry-After, never a 500."""
    if isinstance(exc, ConnectionFailure | WriteConcernError) or exc.timeout:
        return True
    if exc.has_error_label("RetryableWriteError") or exc.has_error_label(
        "TransientTransactionError"
    ):
        return True
    if isinstance(exc, BulkWriteError):
        details = exc.details or {}
        if details.get("writeConcernErrors"):
            return True
        codes = {e.get("code") for e in details.get("writeErrors", [])}
        return bool(codes & STORAGE_TROUBLE_CODES)
    return isinstance(exc, OperationFailure) and exc.code in STORAGE_TROUBLE_CODES


def _credentials(settings: Settings) -> dict[str, Any]:
    # Credentials given apart from the URL need no URL escaping (docker-compose passes them).
    if settings.mongodb_username is None or settings.mongodb_password is None:
        return {}
    return {
        "username": settings.mongodb_username,
        "password": settings.mongodb_password.get_secret_value(),
    }


def blocking_client(settings: Settings, *, op_budget: float) -> pymongo.MongoClient:
    """A synchronous client, for the libraries that read into arrays (pymongoarrow) in a
    worker thread; the motor client stays the one every query of the services goes through."""
    return pymongo.MongoClient(
        settings.mongodb_url,
        **_credentials(settings),
        tz_aware=True,
        w=DURABLE.document["w"],
        journal=True,
        timeoutMS=int(op_budget * 1000),
        serverSelectionTimeoutMS=2000,
        connectTimeoutMS=2000,
        appname="movie-ratings-arrays",
    )


async def connect(settings: Settings, *, op_budget: float | None = None) -> AsyncIOMotorClient:
    """A motor client bound to the running loop, with every document model initialised.

    `op_budget` is the budget of each operation, retries and server selection included
    (pymongo's timeoutMS): the API passes a few seconds so a stalled database is a fast 503;
    workers pass a longer one fitting their largest aggregation.
    """
    if not settings.mongodb_url:
        raise RuntimeError("MONGODB_URL is not set (use `make run` for the embedded default)")
    budget = op_budget if op_budget is not None else settings.mongodb_timeout
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        settings.mongodb_url,
        **_credentials(settings),
        tz_aware=True,
        w=DURABLE.document["w"],
        journal=True,
        timeoutMS=int(budget * 1000),
        serverSelectionTimeoutMS=int(min(budget, 2.0) * 1000),
        connectTimeoutMS=2000,
        appname="movie-ratings",
        event_listeners=[CommandCounter()],
    )
    with pymongo.timeout(STARTUP_TIMEOUT):  # index builds on a large collection take longer
        await init_beanie(
            database=client[settings.mongodb_db],
            document_models=DOCUMENT_MODELS,  # type: ignore[arg-type]
        )
        await _drop_retired(client[settings.mongodb_db])
        build = await client.admin.command("buildInfo")
    use_profile(SECANTUSDB if "secantusVersion" in build else MONGODB)
    return client


# Indexes earlier versions built and nothing reads now: each still costs every write.
# genre_weighted ended in the score, not _id: a genre's page sorted every tie in memory.
RETIRED_INDEXES = {"movies": ["genre_weighted"]}


async def _drop_retired(database: AsyncIOMotorDatabase) -> None:
    """Drop the retired indexes a database still has (idempotent)."""
    for collection, names in RETIRED_INDEXES.items():
        present = {index["name"] async for index in database[collection].list_indexes()}
        for name in names:
            if name in present:
                with contextlib.suppress(OperationFailure):  # another process dropped it
                    await database[collection].drop_index(name)


class BatchedFinds:
    """By-id reads of one collection, batched: the ids concurrent callers ask for in one
    event-loop turn go to the server as one find (the DataLoader pattern). Motor hands every
    command to a thread, which is most of a cold by-id read's CPU, so N requests for N movies
    arriving together cost one command instead of N."""

    def __init__(self, collection: Callable[[], AsyncIOMotorCollection]) -> None:
        self._collection = collection
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiting: dict[Any, list[asyncio.Future[dict[str, Any] | None]]] = {}
        self._sending: set[asyncio.Task[None]] = set()  # held: the loop keeps weak references

    async def find(self, doc_id: Any) -> dict[str, Any] | None:
        """The document with this _id (a copy of its own), or None."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:  # a new loop (tests make one each): nothing waits on the old
            self._loop, self._waiting = loop, {}
        if not self._waiting:
            # An empty context: the command belongs to no single request's counter.
            loop.call_soon(self._send, context=contextvars.Context())
        future: asyncio.Future[dict[str, Any] | None] = loop.create_future()
        self._waiting.setdefault(doc_id, []).append(future)
        calls = db_calls_var.get()
        if calls is not None:
            calls[0] += 1  # the one command this read waits on, whichever task sends it
        return await future

    def _send(self) -> None:
        assert self._loop is not None
        waiting, self._waiting = self._waiting, {}
        ids = list(waiting)
        step = server_profile().in_list_max
        for start in range(0, len(ids), step):
            chunk = {doc_id: waiting[doc_id] for doc_id in ids[start : start + step]}
            task = self._loop.create_task(self._fetch(chunk))
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _fetch(self, waiting: dict[Any, list[asyncio.Future[dict[str, Any] | None]]]) -> None:
        ids = list(waiting)
        query = {"_id": ids[0]} if len(ids) == 1 else {"_id": {"$in": ids}}
        try:
            docs = await self._collection().find(query).to_list(len(ids))
        except BaseException as exc:
            for futures in waiting.values():
                for future in futures:
                    if not future.done():  # a caller that went away cancelled its own
                        future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        found = {doc["_id"]: doc for doc in docs}
        for doc_id, futures in waiting.items():
            doc = found.get(doc_id)
            for future in futures:
                if not future.done():
                    future.set_result(None if doc is None else dict(doc))
