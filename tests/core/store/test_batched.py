"""BatchedFinds against the test server: one find per event-loop turn, each caller its own."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import pytest
from bson import ObjectId

from core import store as core_db
from core.store import db_calls_var
from core.store.batched import BatchedFinds


class CountingCollection:
    """The test collection, counting the finds sent through it."""

    def __init__(self, collection: Any) -> None:
        self.collection = collection
        self.queries: list[dict[str, Any]] = []

    def find(self, query: dict[str, Any], projection: Any = None) -> Any:
        self.queries.append(query)
        return self.collection.find(query, projection)


@pytest.fixture
async def movies(db: Any) -> tuple[CountingCollection, list[ObjectId]]:
    ids = (await db.movies.insert_many([{"title": f"Film {i}"} for i in range(5)])).inserted_ids
    return CountingCollection(db.movies), ids


async def test_reads_in_one_turn_share_one_find(movies):
    collection, ids = movies
    finds = BatchedFinds(lambda: collection)
    missing = ObjectId()
    asked = [ids[0], ids[1], ids[2], ids[0], missing]
    docs = await asyncio.gather(*(finds.find(doc_id) for doc_id in asked))
    assert len(collection.queries) == 1
    assert [d and d["title"] for d in docs] == ["Film 0", "Film 1", "Film 2", "Film 0", None]
    assert docs[0] is not docs[3]  # each caller may change its own copy
    # Alone in its turn, a read is a plain equality.
    assert (await finds.find(ids[4]))["title"] == "Film 4"
    assert collection.queries[-1] == {"_id": ids[4]}


async def test_a_batch_is_cut_at_the_servers_longest_in_list(movies):
    collection, ids = movies
    finds = BatchedFinds(lambda: collection)
    profile = core_db.server_profile()
    core_db.use_profile(replace(profile, in_list_max=2))
    try:
        docs = await asyncio.gather(*(finds.find(doc_id) for doc_id in ids))
    finally:
        core_db.use_profile(profile)
    assert [d["_id"] for d in docs] == ids
    sizes = [len(q["_id"]["$in"]) if isinstance(q["_id"], dict) else 1 for q in collection.queries]
    assert sizes == [2, 2, 1]


async def test_every_caller_counts_the_command_it_waited_on(movies):
    collection, ids = movies
    finds = BatchedFinds(lambda: collection)

    async def request(doc_id: ObjectId) -> int:
        calls = [0]
        db_calls_var.set(calls)  # each task has its own context, as each request does
        await finds.find(doc_id)
        return calls[0]

    assert await asyncio.gather(*(request(doc_id) for doc_id in ids)) == [1] * 5


async def test_a_failed_find_reaches_every_caller_and_the_next_turn_starts_afresh(movies):
    collection, ids = movies

    class Failing:
        def find(self, query: dict[str, Any], projection: Any = None) -> Any:
            raise TimeoutError("stalled")

    target: Any = Failing()
    finds = BatchedFinds(lambda: target)
    results = await asyncio.gather(*(finds.find(i) for i in ids[:3]), return_exceptions=True)
    assert [type(r) for r in results] == [TimeoutError] * 3
    target = collection
    assert (await finds.find(ids[0]))["title"] == "Film 0"


async def test_a_caller_that_goes_away_leaves_the_others_their_answer(movies):
    collection, ids = movies
    finds = BatchedFinds(lambda: collection)
    leaving = asyncio.ensure_future(finds.find(ids[0]))
    staying = asyncio.ensure_future(finds.find(ids[1]))
    await asyncio.sleep(0)  # both are waiting on the batch
    leaving.cancel()
    assert (await staying)["title"] == "Film 1"
    with pytest.raises(asyncio.CancelledError):
        await leaving
