"""Cache-aside reads: served without MongoDB, invalidated exactly, safe when Redis is down.

X-DB-Calls (EXPOSE_DB_CALLS, on in tests) is the number of MongoDB commands the request
sent, counted by the driver's CommandListener in the app itself.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp.test_utils import TestClient
from redis.asyncio import Redis

from api.app import create_app
from core import processes, summaries
from core.cache import cache_for
from core.queue import DRAIN_SUMMARIES, make_producer
from embedded import stack as embedded
from tests.conftest import API, Api, eventually


def calls(resp: Any) -> int:
    return int(resp.headers["X-DB-Calls"])


async def test_a_cached_movie_read_sends_no_mongodb_command(api, client):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin, title="Heat")
    first = await client.get(f"{API}/movies/{movie['id']}")
    second = await client.get(f"{API}/movies/{movie['id']}")
    assert first.status == second.status == 200
    assert calls(first) == 1 and calls(second) == 0
    assert await first.read() == await second.read()
    assert first.headers["ETag"] == second.headers["ETag"]
    again = await client.get(
        f"{API}/movies/{movie['id']}", headers={"If-None-Match": second.headers["ETag"]}
    )
    assert again.status == 304 and calls(again) == 0 and await again.read() == b""


async def test_another_process_invalidation_reaches_the_in_process_copy(api, client, settings):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    url = f"{API}/movies/{movie['id']}"
    await client.get(url)
    assert calls(await client.get(url)) == 0
    # A worker (another process, another Cache) stores a new summary and says so.
    async with Redis.from_url(settings.redis_url_required) as redis:
        await cache_for(settings, redis).movies_changed([movie["id"]])

    async def reloaded() -> bool:
        return calls(await client.get(url)) == 1

    await eventually(reloaded, timeout=2)  # well under the 5 s lifetime of the copy


async def test_concurrent_misses_on_one_key_load_it_once(api, client):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    responses = await asyncio.gather(
        *(client.get(f"{API}/movies/{movie['id']}") for _ in range(20))
    )
    assert {r.status for r in responses} == {200}
    assert sum(calls(r) for r in responses) == 1


async def test_a_rating_invalidates_exactly_the_affected_keys(api, client):
    admin = await api.user("root", admin=True)
    rated, other = await api.movie(admin, title="Rated"), await api.movie(admin, title="Other")
    rater, bystander = await api.user(), await api.user()
    urls = {
        "rated": f"{API}/movies/{rated['id']}",
        "other": f"{API}/movies/{other['id']}",
        "list": f"{API}/movies?sort=-votes",
        "rater": f"{API}/users/{rater['id']}",
        "rater_profile": f"{API}/users/{rater['id']}/ratings",
        "bystander": f"{API}/users/{bystander['id']}",
        "bystander_profile": f"{API}/users/{bystander['id']}/ratings",
    }
    for url in urls.values():  # warm every key
        await client.get(url)
    assert all([calls(await client.get(url)) == 0 for url in urls.values()])

    await api.rate(rater, rated["id"], 4.5)
    # The rater sees their own write at once; nobody else's keys moved.
    profile = await client.get(urls["rater_profile"])
    assert calls(profile) > 0
    assert [i["score"] for i in (await profile.json())["items"]] == [4.5]
    for name in ("other", "bystander", "bystander_profile"):
        assert calls(await client.get(urls[name])) == 0, name

    async def summary_updated() -> bool:
        resp = await client.get(urls["rated"])
        return (await resp.json())["rating"]["count"] == 1

    await eventually(summary_updated)  # the worker recomputed it and bumped its version
    listed = await client.get(urls["list"])
    assert calls(listed) > 0
    assert (await listed.json())["items"][0]["id"] == rated["id"]

    async def stats_updated() -> bool:
        return (await (await client.get(urls["rater"])).json())["stats"]["count"] == 1

    await eventually(stats_updated)
    for name in ("other", "bystander", "bystander_profile"):
        assert calls(await client.get(urls[name])) == 0, name


async def test_a_value_loaded_before_an_invalidation_is_never_served_after_it(settings, redis):
    cache = cache_for(settings, redis)
    key = cache.keys.movie("race")

    async def slow_old_read() -> dict[str, str]:
        await cache.movies_changed(["race"])  # the worker's write lands while we load
        return {"summary": "old"}

    assert await cache.fetch(key, slow_old_read) == b'{"summary":"old"}'

    async def fresh_read() -> dict[str, str]:
        return {"summary": "new"}

    assert await cache.fetch(key, fresh_read) == b'{"summary":"new"}'


async def test_reads_bypass_a_stopped_redis_and_aggregation_catches_up(
    aiohttp_client: Any, settings, db, worker, tmp_path, caplog
):
    port = processes.free_port()
    own_redis = embedded.start_redis(port=port, workdir=tmp_path / "redis")
    # Without the in-process copy, so every read below shows where it was served from.
    app_settings = settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{port}/0", "cache_near_ttl": 0}
    )
    client: TestClient = await aiohttp_client(create_app(app_settings))
    api = Api(client, db)
    try:
        admin = await api.user("root", admin=True)
        movie = await api.movie(admin, title="Outage")
        url = f"{API}/movies/{movie['id']}"
        await client.get(url)
        assert calls(await client.get(url)) == 0  # cached

        processes.stop([own_redis])
        caplog.set_level(logging.WARNING, logger="core.cache")
        for _ in range(3):
            resp = await client.get(url)
            assert resp.status == 200 and calls(resp) == 1  # straight from MongoDB
        fan = await api.user()
        assert await api.rate(fan, movie["id"], 3.0) == 201  # the write still succeeds
        outage_logs = [r for r in caplog.records if "redis unavailable" in r.getMessage()]
        assert len(outage_logs) == 1
        # The write's intent is in MongoDB with it, whatever the broker did.
        assert await db.ratings.count_documents({"changed_at": {"$exists": True}}) == 1

        own_redis = embedded.start_redis(port=port, workdir=tmp_path / "redis")
        await asyncio.sleep(1.1)  # the breaker's cool-down
        resp = await client.get(url)
        assert resp.status == 200 and calls(resp) == 1  # a new epoch: nothing old is served

        # Beat's periodic drain, through the queue the real worker consumes.
        make_producer(settings).send_task(DRAIN_SUMMARIES)

        async def caught_up() -> bool:
            doc = await db.movies.find_one({"_id": _oid(movie["id"])})
            pending = await summaries.undrained()
            return doc["rating"]["count"] == 1 and doc["rating"]["mean"] == 3.0 and not pending

        await eventually(caught_up)
        user = await db.users.find_one({"_id": _oid(fan["id"])})
        assert user["stats"]["count"] == 1
    finally:
        processes.stop([own_redis])


def _oid(value: str) -> Any:
    from bson import ObjectId

    return ObjectId(value)


async def test_shutdown_ends_the_listener_even_when_redis_swallows_its_cancellation(
    aiohttp_client, settings, db, monkeypatch
):
    # redis-py answers "no message" when a cancellation lands just as its read timeout
    # expires; this makes every cancellation land that way.
    from redis.asyncio.client import PubSub

    from api.appkeys import NEAR

    get_message = PubSub.get_message

    async def swallowing(self: PubSub, *args: Any, **kwargs: Any) -> Any:
        try:
            return await get_message(self, *args, **kwargs)
        except asyncio.CancelledError:
            return None

    monkeypatch.setattr(PubSub, "get_message", swallowing)
    client = await aiohttp_client(create_app(settings))

    async def subscribed() -> bool:
        return client.app[NEAR].live

    await eventually(subscribed)
    await asyncio.wait_for(client.close(), timeout=10)
