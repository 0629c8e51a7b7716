"""By-id reads batched across concurrent callers (the DataLoader pattern)."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any

from pymongo.asynchronous.collection import AsyncCollection

from core.store.client import db_calls_var
from core.store.profile import server_profile


class BatchedFinds:
    """By-id reads of one collection, batched: the ids concurrent callers ask for in one
    event-loop turn go to the server as one find, so N requests for N movies arriving
    together cost one command (and one server turn on SecantusDB) instead of N."""

    def __init__(
        self,
        collection: Callable[[], AsyncCollection[dict[str, Any]]],
        projection: dict[str, Any] | None = None,
    ) -> None:
        self._collection = collection
        self._projection = projection
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
            docs = await self._collection().find(query, self._projection).to_list(len(ids))
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
