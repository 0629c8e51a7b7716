"""Ratings: set, change, read, remove; summaries converge; profiles; concurrency."""

from __future__ import annotations

import asyncio

import pytest
from beanie import PydanticObjectId

from api.appkeys import CACHE as API_CACHE
from api.appkeys import QUEUE as API_QUEUE
from core.store import profile as core_profile
from tests.conftest import API, eventually


async def _summary(client, movie_id, count):
    movie = await (await client.get(f"{API}/movies/{movie_id}")).json()
    return movie["rating"] if movie["rating"]["count"] == count else None


async def test_put_get_change_delete_rating(api, client, db):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    alice = await api.user("alice")
    url = f"{API}/movies/{movie['id']}/rating"

    assert (await client.get(url, headers=alice["auth"])).status == 404
    resp = await client.put(url, json={"score": 4.5}, headers=alice["auth"])
    assert resp.status == 201
    first = await resp.json()
    assert first["score"] == 4.5 and first["movie_id"] == movie["id"]
    assert first["user_id"] == alice["id"]

    resp = await client.put(url, json={"score": 3}, headers=alice["auth"])
    assert resp.status == 200
    changed = await resp.json()
    assert changed["score"] == 3.0 and changed["rated_at"] == first["rated_at"]
    got = await (await client.get(url, headers=alice["auth"])).json()
    assert got["score"] == 3.0 and got["updated_at"] == changed["updated_at"]
    assert await db.ratings.count_documents({}) == 1

    summary = await eventually(lambda: _summary(client, movie["id"], 1))
    assert summary["mean"] == 3.0 and summary["histogram"]["3.0"] == 1

    assert (await client.delete(url, headers=alice["auth"])).status == 204
    assert (await client.delete(url, headers=alice["auth"])).status == 404
    summary = await eventually(lambda: _summary(client, movie["id"], 0))
    assert summary["mean"] is None and summary["weighted"] is None


async def test_put_rating_through_find_and_modify(api, client, db, monkeypatch):
    """The MongoDB profile's path (one findAndModify per write), on whatever server runs here."""
    monkeypatch.setattr(core_profile, "_profile", core_profile.MONGODB)
    await test_a_rating_write_carries_its_recompute_intent(api, client, db, monkeypatch)


@pytest.mark.parametrize(
    "profile", [core_profile.SECANTUSDB, core_profile.MONGODB], ids=lambda p: p.name
)
async def test_an_unchanged_score_is_200_and_changes_nothing(api, client, db, monkeypatch, profile):
    monkeypatch.setattr(core_profile, "_profile", profile)  # update+read, or one findAndModify
    asked: list[str] = []

    async def recording_drain() -> bool:
        asked.append("drain")
        return True

    monkeypatch.setattr(client.app[API_QUEUE], "request_drain", recording_drain)
    admin = await api.user(admin=True)
    movie = await api.movie(admin)
    alice = await api.user()
    url = f"{API}/movies/{movie['id']}/rating"
    resp = await client.put(url, json={"score": 3.5}, headers=alice["auth"])
    assert resp.status == 201 and asked == ["drain"]
    first = await resp.json()
    mine = {"user_id": PydanticObjectId(alice["id"]), "movie_id": PydanticObjectId(movie["id"])}
    before = await db.ratings.find_one(mine)
    await asyncio.sleep(0.01)  # a bump would show: the clocks have millisecond steps

    resp = await client.put(url, json={"score": 3.5}, headers=alice["auth"])
    assert resp.status == 200 and await resp.json() == first
    assert await db.ratings.find_one(mine) == before  # updated_at and the drain mark kept
    assert asked == ["drain"]  # nothing to recompute

    resp = await client.put(url, json={"score": 4}, headers=alice["auth"])
    assert resp.status == 200 and asked == ["drain", "drain"]
    changed = await resp.json()
    assert changed["updated_at"] > first["updated_at"]
    assert changed["rated_at"] == first["rated_at"]
    after = await db.ratings.find_one(mine)
    assert after["changed_at"] > before["changed_at"] and after["score"] == 4.0


async def test_a_rating_write_carries_its_recompute_intent(api, client, db, monkeypatch):
    # No drain asked for here, so none clears the stamps before they are read (the intent
    # is what is under test, not its draining).
    async def no_drain() -> None:
        return None

    monkeypatch.setattr(client.app[API_QUEUE], "request_drain", no_drain)
    admin = await api.user(admin=True)
    movie = await api.movie(admin)
    alice = await api.user()
    url = f"{API}/movies/{movie['id']}/rating"
    await db.summary_intents.delete_many({})
    resp = await client.put(url, json={"score": 4.5}, headers=alice["auth"])
    assert resp.status == 201 and int(resp.headers["X-DB-Calls"]) <= 2
    # Written by the same update as the score: no window where one exists without the other.
    mine = {"user_id": PydanticObjectId(alice["id"]), "movie_id": PydanticObjectId(movie["id"])}
    stamp = (await db.ratings.find_one(mine))["changed_at"]
    await asyncio.sleep(0.01)  # the server's clock has millisecond steps
    resp = await client.put(url, json={"score": 2}, headers=alice["auth"])
    assert resp.status == 200 and int(resp.headers["X-DB-Calls"]) <= 2
    assert (await db.ratings.find_one(mine))["changed_at"] > stamp
    # A removal has no document to stamp: its intent is its own document, written first.
    assert (await client.delete(url, headers=alice["auth"])).status == 204
    intent = await db.summary_intents.find_one({"user_ids": mine["user_id"]})
    assert [str(i) for i in intent["movie_ids"]] == [movie["id"]]
    assert [str(i) for i in intent["user_ids"]] == [alice["id"]]


async def test_a_deleted_movie_refuses_rating_reads_and_writes_at_once(api, client, db):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    alice = await api.user("alice")
    url = f"{API}/movies/{movie['id']}/rating"
    await api.rate(alice, movie["id"], 4.0)
    await eventually(lambda: _stats_count(client, alice["id"], 1))
    assert (await client.delete(f"{API}/movies/{movie['id']}", headers=admin["auth"])).status == 204
    assert await db.ratings.count_documents({}) == 0  # gone with the movie, not later
    for method, body in (("GET", None), ("PUT", {"score": 3.0})):
        resp = await client.request(method, url, json=body, headers=alice["auth"])
        assert resp.status == 404, method
    resp = await client.get(f"{API}/movies/{movie['id']}/ratings")
    assert resp.status == 404
    profile = await (await client.get(f"{API}/users/{alice['id']}/ratings")).json()
    assert profile["items"] == []
    # A drain fixes the rater's stats, with no further writes: eventually, not by a deadline
    # (the first drain of a test session has been seen to take ~16 s on two busy cores).
    await eventually(lambda: _stats_count(client, alice["id"], 0), timeout=90)


async def _stats_count(client, user_id, count):
    user = await (await client.get(f"{API}/users/{user_id}")).json()
    return user if user["stats"]["count"] == count else None


async def test_invalid_scores_are_422_and_change_nothing(api, client, db):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    alice = await api.user("alice")
    url = f"{API}/movies/{movie['id']}/rating"
    await api.rate(alice, movie["id"], 2.5)
    for score in [0, 0.0, 5.5, 4.3, -1, 4.500001, "4.5", True, None, [4.5], {"v": 4}]:
        resp = await client.put(url, json={"score": score}, headers=alice["auth"])
        assert resp.status == 422, score
        problem = await resp.json()
        assert problem["errors"][0]["field"] == "score"
    for body in [{}, {"score": 4.5, "extra": 1}]:
        assert (await client.put(url, json=body, headers=alice["auth"])).status == 422
    # Infinity and NaN are not JSON at all: a malformed body, not a bad value.
    resp = await client.put(
        url,
        data='{"score": Infinity}',
        headers={**alice["auth"], "Content-Type": "application/json"},
    )
    assert resp.status == 400
    resp = await client.put(
        url,
        data="score=4",
        headers={**alice["auth"], "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert resp.status == 415
    assert (await db.ratings.find_one({}))["score"] == 2.5


async def test_rating_unknown_movie_or_without_token(api, client, db):
    alice = await api.user("alice")
    url = f"{API}/movies/65f1c0ffee0123456789abcd/rating"
    assert (await client.put(url, json={"score": 4}, headers=alice["auth"])).status == 404
    assert (await client.put(url, json={"score": 4})).status == 401
    assert (
        await client.put(f"{API}/movies/bad/rating", json={"score": 4}, headers=alice["auth"])
    ).status == 422
    assert await db.ratings.count_documents({}) == 0


async def test_summary_weighted_and_user_stats_converge(api, client):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    users = [await api.user() for _ in range(4)]
    for user, score in zip(users, [5.0, 4.0, 4.0, 0.5], strict=True):
        await api.rate(user, movie["id"], score)
    summary = await eventually(lambda: _summary(client, movie["id"], 4))
    assert summary["mean"] == 3.375
    assert summary["histogram"]["4.0"] == 2 and summary["histogram"]["0.5"] == 1
    assert summary["weighted"] is not None and summary["updated_at"]
    user = await (await client.get(f"{API}/users/{users[0]['id']}")).json()
    stats = await eventually(lambda: _user_stats(client, users[0]["id"], 1))
    assert stats["mean"] == 5.0 and user["username"] == users[0]["username"]


async def _user_stats(client, user_id, count):
    user = await (await client.get(f"{API}/users/{user_id}")).json()
    return user["stats"] if user["stats"]["count"] == count else None


async def test_profile_lists_rated_movies_newest_first_or_by_score(api, client):
    admin = await api.user("root", admin=True)
    movies = [await api.movie(admin, title=f"M{i}", year=1990 + i) for i in range(3)]
    alice = await api.user("alice")
    for movie, score in zip(movies, [3.0, 5.0, 1.0], strict=True):
        await api.rate(alice, movie["id"], score)
    resp = await client.get(f"{API}/users/me/ratings", headers=alice["auth"])
    page = await resp.json()
    assert [i["movie"]["title"] for i in page["items"]] == ["M2", "M1", "M0"]
    item = page["items"][0]
    assert set(item) == {"movie_id", "user_id", "score", "rated_at", "updated_at", "movie"}
    assert set(item["movie"]) == {"id", "title", "year", "rating"}
    assert set(item["movie"]["rating"]) == {"count", "mean"}
    resp = await client.get(f"{API}/users/{alice['id']}/ratings?sort=score&limit=2")
    page = await resp.json()
    assert [i["score"] for i in page["items"]] == [5.0, 3.0]
    assert page["next"] is not None
    page = await (await client.get(page["next"])).json()
    assert [i["score"] for i in page["items"]] == [1.0] and page["next"] is None
    assert (await client.get(f"{API}/users/me/ratings")).status == 401
    assert (await client.get(f"{API}/users/65f1c0ffee0123456789abcd/ratings")).status == 404


async def test_movie_ratings_list(api, client):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    users = [await api.user() for _ in range(3)]
    for user in users:
        await api.rate(user, movie["id"], 3.5)
    resp = await client.get(f"{API}/movies/{movie['id']}/ratings?limit=2")
    page = await resp.json()
    assert [r["user_id"] for r in page["items"]] == [users[2]["id"], users[1]["id"]]
    assert page["next"]
    assert (await client.get(f"{API}/movies/65f1c0ffee0123456789abcd/ratings")).status == 404


async def test_concurrent_ratings_many_users_one_movie_end_exact(api, client, db):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    users = [await api.user() for _ in range(12)]
    scores = [(i % 10 + 1) / 2 for i in range(len(users))]
    await asyncio.gather(*(api.rate(u, movie["id"], s) for u, s in zip(users, scores, strict=True)))
    summary = await eventually(lambda: _summary(client, movie["id"], len(users)))
    assert summary["mean"] == sum(scores) / len(scores)
    expected = {f"{(i + 1) / 2:.1f}": 0 for i in range(10)}
    for s in scores:
        expected[f"{s:.1f}"] += 1
    assert summary["histogram"] == expected


async def test_one_user_racing_itself_keeps_one_rating(api, client, db):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    alice = await api.user("alice")
    url = f"{API}/movies/{movie['id']}/rating"
    scores = [1.0, 2.0, 3.0, 4.0, 5.0, 4.5, 3.5, 2.5]
    responses = await asyncio.gather(
        *(client.put(url, json={"score": s}, headers=alice["auth"]) for s in scores)
    )
    statuses = sorted(r.status for r in responses)
    assert statuses.count(201) == 1 and statuses.count(200) == len(scores) - 1
    assert await db.ratings.count_documents({}) == 1
    final = (await db.ratings.find_one({}))["score"]
    summary = await eventually(lambda: _summary(client, movie["id"], 1))
    await eventually(lambda: _mean_is(client, movie["id"], final))
    assert summary["count"] == 1


async def _mean_is(client, movie_id, mean):
    movie = await (await client.get(f"{API}/movies/{movie_id}")).json()
    return movie["rating"]["mean"] == mean


async def test_a_process_that_saw_a_movie_skips_its_check_and_the_drain_cleans_up(
    api, client, db, aiohttp_client, settings
):
    """A new rating costs one database round trip when this process saw its movie exist
    lately. Another process's deletion reaches it over the invalidation channel; a rating
    accepted in the moment before (or with the message lost) goes with the movie at the
    next drain, and the rater's stats follow."""
    from api.app import create_app

    other = await aiohttp_client(create_app(settings))  # a second API process
    admin = await api.user("root", admin=True)
    alice, bob, carol = await api.user("alice"), await api.user("bob"), await api.user("carol")
    movie = await api.movie(admin)
    url = f"{API}/movies/{movie['id']}/rating"
    known = client.app[API_CACHE].known_movies
    await eventually(lambda: _true(known.live))
    first = await client.put(url, json={"score": 4.0}, headers=alice["auth"])
    assert first.status == 201 and first.headers["X-DB-Calls"] == "2"  # upsert + movie check
    second = await client.put(url, json={"score": 3.0}, headers=bob["auth"])
    assert second.status == 201 and second.headers["X-DB-Calls"] == "1"  # the upsert only
    assert second.headers["Location"] == url

    # Deleted through the other process: this one hears it and checks again.
    assert (await other.delete(f"{API}/movies/{movie['id']}", headers=admin["auth"])).status == 204

    async def refused() -> bool:
        resp = await client.put(url, json={"score": 2.0}, headers=carol["auth"])
        return resp.status == 404

    await eventually(refused)

    # A deletion this process never heard of (its message lost): the rating is accepted,
    # then the drain finds the movie gone and removes the rating with it.
    movie = await api.movie(admin)
    url = f"{API}/movies/{movie['id']}/rating"
    assert (await client.put(url, json={"score": 4.0}, headers=alice["auth"])).status == 201
    await db.movies.delete_one({"_id": PydanticObjectId(movie["id"])})
    late = await client.put(url, json={"score": 5.0}, headers=carol["auth"])
    assert late.status == 201
    await eventually(
        lambda: _true_async(
            db.ratings.count_documents({"movie_id": PydanticObjectId(movie["id"])}), 0
        )
    )
    await eventually(lambda: _stats_count(client, carol["id"], 0))


async def _true(value: bool) -> bool:
    return value


async def _true_async(awaitable, expected) -> bool:
    return await awaitable == expected
