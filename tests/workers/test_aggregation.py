"""The worker path, with a real `celery -A workers worker` consuming from Redis."""

from __future__ import annotations

import asyncio
from typing import Any

from beanie import PydanticObjectId
from redis.asyncio import Redis

from api.app import create_app
from core.queue import AGGREGATE_MOVIE, REFRESH_WEIGHTED, TaskQueue, make_producer, pending_key
from core.services import aggregation
from models import Movie
from tests.conftest import API, Api, eventually, worker_log


class RecordingCelery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def send_task(self, name: str, args: list[Any], **kwargs: Any) -> None:
        self.sent.append((name, args))


async def test_writes_are_coalesced_while_a_recomputation_is_pending(settings, client):
    celery = RecordingCelery()
    async with Redis.from_url(settings.redis_url_required) as redis:
        queue = TaskQueue(celery=celery, redis=redis, settings=settings)  # type: ignore[arg-type]
        movie_id = str(PydanticObjectId())
        for _ in range(10):
            await queue.schedule_aggregation(movie_ids=[movie_id])
        assert celery.sent == [(AGGREGATE_MOVIE, [movie_id])]
        # The task started: the next write needs a task of its own.
        await queue.release_pending("movie", movie_id)
        await queue.schedule_aggregation(movie_ids=[movie_id])
        assert len(celery.sent) == 2
        await redis.delete(pending_key("movie", movie_id))


async def test_burst_of_ratings_converges_exactly_with_few_recomputations(
    aiohttp_client, settings, db, services
):
    # A one-second coalescing window makes the bound below independent of machine speed.
    slow = settings.model_copy(update={"aggregation_delay": 1.0})
    api = Api(await aiohttp_client(create_app(slow)), db)
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    users = [await api.user() for _ in range(40)]
    scores = [(i * 7 % 10 + 1) / 2 for i in range(len(users))]
    await asyncio.gather(*(api.rate(u, movie["id"], s) for u, s in zip(users, scores, strict=True)))

    async def exact():
        doc = await db.movies.find_one({"_id": PydanticObjectId(movie["id"])})
        return doc if doc["rating"]["count"] == len(users) else None

    doc = await eventually(exact)
    assert doc["rating"]["mean"] == sum(scores) / len(scores)
    assert doc["rating"]["sum"] == sum(scores)
    assert sum(doc["rating"]["histogram"]) == len(users)
    recomputations = worker_log(services).count(f'"movie_id":"{movie["id"]}"')
    assert 1 <= recomputations <= 10, recomputations  # not one per write


async def test_an_older_computation_never_overwrites_a_newer_one(client, db):
    movie = Movie(title="Race", title_key="race")
    await movie.insert()
    collection = Movie.get_motor_collection()
    newer = {
        "count": 2,
        "sum": 9.0,
        "mean": 4.5,
        "histogram": [0] * 8 + [2, 0],
        "ticket": 7,
        "updated_at": None,
        "weighted": 4.5,
    }
    older = {**newer, "count": 1, "sum": 4.5, "ticket": 6}
    await collection.update_one(*aggregation.if_newer("rating", movie.id, newer))
    result = await collection.update_one(*aggregation.if_newer("rating", movie.id, older))
    assert result.matched_count == 0
    stored = await db.movies.find_one({"_id": movie.id})
    assert stored["rating"]["ticket"] == 7 and stored["rating"]["count"] == 2


async def test_tickets_are_reserved_in_blocks(client, db):
    # The real worker may take tickets for a previous test's leftovers in between,
    # so the property is "no overlap and increasing", not "exactly the next one".
    first = await aggregation.take_tickets(5)
    second = await aggregation.take_tickets()
    assert second >= first + 5


async def test_refresh_task_sets_global_mean_and_weighted_scores(api, client, db, settings):
    admin = await api.user("root", admin=True)
    hit = await api.movie(admin, title="Hit")
    flop = await api.movie(admin, title="Flop")
    raters = [await api.user() for _ in range(3)]
    for r in raters:
        await api.rate(r, hit["id"], 5.0)
    await api.rate(raters[0], flop["id"], 1.0)

    async def counts():
        docs = await db.movies.find({}, {"rating.count": 1}).to_list(None)
        return sorted(d["rating"]["count"] for d in docs) == [1, 3]

    await eventually(counts)
    producer = make_producer(settings)
    try:
        await asyncio.to_thread(producer.send_task, REFRESH_WEIGHTED)
    finally:
        producer.close()
    c = (3 * 5.0 + 1.0) / 4
    m = settings.rating_prior_votes

    async def refreshed():
        stats = await db.global_stats.find_one({"_id": "ratings"})
        return stats if stats and stats["votes"] == 4 else None

    stats = await eventually(refreshed)
    assert stats["mean"] == c

    async def hit_weighted():
        movie = await (await client.get(f"{API}/movies/{hit['id']}")).json()
        expected = 3 / (3 + m) * 5.0 + m / (3 + m) * c
        return abs(movie["rating"]["weighted"] - expected) < 1e-9

    await eventually(hit_weighted)


async def test_request_id_reaches_the_worker_logs(api, client, services):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    alice = await api.user("alice")
    resp = await client.put(
        f"{API}/movies/{movie['id']}/rating",
        json={"score": 4.0},
        headers={**alice["auth"], "X-Request-ID": "trace-me-0042"},
    )
    assert resp.status == 201

    async def logged():
        return "trace-me-0042" in worker_log(services)

    await eventually(logged)


async def test_malformed_task_arguments_are_dropped_not_retried(settings, services, db):
    producer = make_producer(settings)
    try:
        await asyncio.to_thread(producer.send_task, AGGREGATE_MOVIE, args=["not-an-id"])
    finally:
        producer.close()

    async def dropped():
        return "malformed id" in worker_log(services)

    await eventually(dropped)
