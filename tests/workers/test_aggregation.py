"""The worker path, with a real `celery -A workers worker` consuming from Redis, and the
drain's ordering rules called directly."""

from __future__ import annotations

import asyncio
import importlib
import time
from datetime import timedelta
from typing import Any

import pytest
from beanie import PydanticObjectId
from bson import ObjectId
from redis.asyncio import Redis

from api.app import create_app
from core import summaries
from core.cache import RedisHealth
from core.load import RequestMeter, api_busy, api_requests_per_second
from core.queue import (
    DRAIN_PENDING_KEY,
    DRAIN_SUMMARIES,
    REFRESH_WEIGHTED,
    RUN_IMPORT,
    TaskQueue,
    make_producer,
)
from core.store import server_profile
from core.store import summaries as summary_store
from core.store.migrations import PENDING_INDEX, migrate
from core.store.ratings import MARK_CHANGED
from models import Movie, User, utcnow
from tests import factories
from tests.conftest import API, Api, eventually, worker_log

# The module, not the function the package exports under the same name.
summary_drain = importlib.import_module("core.summaries.drain")


class RecordingCelery:
    def __init__(self) -> None:
        self.sent: list[tuple[str, list[Any]]] = []

    def send_task(self, name: str, args: list[Any], **kwargs: Any) -> None:
        self.sent.append((name, args))


def _drain(**given: Any) -> Any:
    """A drain as these tests run it: small rounds, no rest beyond half the time, writes
    taken once they are a second old; a test names what it changes."""
    return summaries.drain(**{"prior_votes": 10, "batch": 500, "duty": 0.5, "settle": 1.0, **given})


async def _movie(title: str = "Race") -> Movie:
    movie = Movie(title=title, title_key=title.casefold())
    await movie.insert()
    return movie


async def _user() -> PydanticObjectId:
    """A stored user (the drain purges ratings whose user does not exist)."""
    user = factories.user()
    await user.insert()
    assert user.id is not None
    return user.id


async def _stamped(movie: Movie, user_id: PydanticObjectId, score: float) -> ObjectId:
    """A rating as a PUT leaves it when nothing after the write ran (no task queued)."""
    rating = factories.rating(movie_id=movie.id, user_id=user_id, score=score)
    await rating.insert()
    await rating.get_pymongo_collection().update_one({"_id": rating.id}, MARK_CHANGED)
    return rating.id


async def test_drain_requests_are_coalesced_while_one_is_queued(settings, client):
    celery = RecordingCelery()
    async with Redis.from_url(settings.redis_url_required) as redis:
        await redis.delete(DRAIN_PENDING_KEY)
        queue = TaskQueue(celery=celery, redis=redis, settings=settings)  # type: ignore[arg-type]
        for _ in range(10):
            assert await queue.request_drain()
        assert celery.sent == [(DRAIN_SUMMARIES, [])]
        # The drain started: the next write needs a drain of its own.
        await queue.drain_started()
        await queue.request_drain()
        assert len(celery.sent) == 2
        # A key a crash left behind blocks nothing for long: it expires within seconds.
        assert 0 < await redis.ttl(DRAIN_PENDING_KEY) <= 5
        await redis.delete(DRAIN_PENDING_KEY)


async def test_burst_of_ratings_converges_exactly_and_drains_every_intent(
    aiohttp_client, settings, db, worker
):
    # A one-second coalescing window: the burst is drained in a few rounds, not 40.
    slow = settings.model_copy(update={"aggregation_delay": 1.0})
    api = Api(await aiohttp_client(create_app(slow)), db)
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    users = [await api.user() for _ in range(40)]
    scores = [(i * 7 % 10 + 1) / 2 for i in range(len(users))]
    await asyncio.gather(*(api.rate(u, movie["id"], s) for u, s in zip(users, scores, strict=True)))

    async def exact():
        doc = await db.movies.find_one({"_id": PydanticObjectId(movie["id"])})
        pending = await summaries.undrained()
        return doc if doc["rating"]["count"] == len(users) and not pending else None

    doc = await eventually(exact)
    assert doc["rating"]["mean"] == sum(scores) / len(scores)
    assert doc["rating"]["sum"] == sum(scores)
    assert sum(doc["rating"]["histogram"]) == len(users)
    for user in users:
        stats = (await db.users.find_one({"_id": PydanticObjectId(user["id"])}))["stats"]
        assert stats["count"] == 1


async def test_a_recomputation_that_lost_a_race_reads_again(client, db, monkeypatch):
    movie = await _movie()
    for score in (4.0, 5.0):
        await factories.rating(movie_id=movie.id, user_id=await _user(), score=score).insert()
    real = summary_store.histograms
    raced = False

    async def racing(target: Any, ids: list, **kwargs: Any) -> dict:
        nonlocal raced
        counts = await real(target, ids, **kwargs)
        if not raced:
            raced = True
            # Between this recomputation's version read and its write, a rating lands and
            # another recomputation stores a summary that includes it.
            late = factories.rating(movie_id=movie.id, user_id=await _user(), score=1.0)
            await late.insert()
            assert (await summaries.recompute(summaries.MOVIES, [movie.id])).stored
        return counts

    monkeypatch.setattr(summary_store, "histograms", racing)
    done = await summaries.recompute(summaries.MOVIES, [movie.id])
    assert done.stored == [movie.id]
    stored = (await db.movies.find_one({"_id": movie.id}))["rating"]
    # Its first result (2 ratings) did not overwrite the newer one; its second saw all 3.
    assert stored["count"] == 3 and stored["sum"] == 10.0


async def test_the_drain_heals_a_write_whose_task_was_never_queued(client, db):
    movie, user = await _movie(), User(username="u", display_name="u")
    await user.insert()
    await _stamped(movie, user.id, 3.5)
    report = await _drain()
    assert movie.id in report.movies and user.id in report.users
    assert (await db.movies.find_one({"_id": movie.id}))["rating"]["mean"] == 3.5
    assert (await db.users.find_one({"_id": user.id}))["stats"]["count"] == 1
    assert await summaries.undrained() == 0


async def test_a_write_during_a_round_is_left_for_the_next(client, db, monkeypatch):
    movie = await _movie()
    rating_id = await _stamped(movie, await _user(), 2.0)
    real = summaries.recompute_users

    async def meanwhile(ids: Any, **kwargs: Any) -> summaries.Recomputed:
        # The same user rates again after the drain read the movie's ratings.
        await db.ratings.update_one({"_id": rating_id}, {"$set": {"score": 4.0}, **MARK_CHANGED})
        return await real(ids, **kwargs)

    monkeypatch.setattr(summary_drain, "recompute_users", meanwhile)
    report = await summaries.drain_once(prior_votes=10, batch=100, settle=0)
    monkeypatch.setattr(summary_drain, "recompute_users", real)
    assert report.taken == 1
    assert (await db.movies.find_one({"_id": movie.id}))["rating"]["mean"] == 2.0
    assert await summaries.undrained() == 1
    await summaries.drain_once(prior_votes=10, batch=100, settle=0)
    assert (await db.movies.find_one({"_id": movie.id}))["rating"]["mean"] == 4.0
    assert await summaries.undrained() == 0


async def test_a_drain_that_lost_its_lock_stops_after_its_round(client, db, monkeypatch):
    movie = await _movie()
    await _stamped(movie, await _user(), 3.0)
    real, rounds = summaries.drain_once, []

    async def counted(**kwargs: Any) -> summaries.DrainReport:
        rounds.append(kwargs)
        return await real(**kwargs)

    monkeypatch.setattr(summary_drain, "drain_once", counted)
    report = await _drain(settle=0, keep_going=lambda: False)
    assert report.taken == 1 and len(rounds) == 1  # no rest, no second round: another may run
    assert (await db.movies.find_one({"_id": movie.id}))["rating"]["mean"] == 3.0
    await _stamped(movie, await _user(), 5.0)
    await _drain(settle=0, keep_going=lambda: True)
    assert len(rounds) == 3  # its round, then one that found nothing


async def test_a_drain_round_stores_summaries_in_small_writes_with_rests_between(
    client, db, monkeypatch
):
    movies, user = [await _movie(f"M{i}") for i in range(25)], User(username="u", display_name="u")
    await user.insert()
    for i, movie in enumerate(movies):
        await _stamped(movie, user.id, 0.5 + (i % 10) / 2)
    writes: list[int] = []
    real_bulk_write = type(db.movies).bulk_write

    async def counted(self: Any, requests: list, **kwargs: Any) -> Any:
        writes.append(len(requests))
        return await real_bulk_write(self, requests, **kwargs)

    rests: list[float] = []

    async def rest(self: summaries.Pace, *, at_least: float = 0.0) -> None:
        rests.append(at_least)

    monkeypatch.setattr(type(db.movies), "bulk_write", counted)
    monkeypatch.setattr(summaries.Pace, "rest", rest)
    report = await summaries.drain_once(
        prior_votes=10, batch=100, settle=0, pace=summaries.Pace(0.25)
    )
    assert len(report.movies) == 25 and len(report.users) == 1
    assert writes == [10, 10, 5, 1]  # the movies' summaries, then the user's stats
    assert len(rests) == 4
    for i, movie in enumerate(movies):
        stored = (await db.movies.find_one({"_id": movie.id}))["rating"]
        assert stored["count"] == 1 and stored["mean"] == 0.5 + (i % 10) / 2
    # Unpaced (an import's recomputation), one write holds them all.
    writes.clear()
    await summaries.recompute_movies([m.id for m in movies], prior_votes=10)
    assert writes == [25]


async def test_a_pace_rests_in_proportion_to_the_work_since_its_last_rest():
    clock, slept = [100.0], []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    pace = summaries.Pace(0.25, rest_max=4.0, clock=lambda: clock[0], sleep=sleep)
    clock[0] += 0.5
    await pace.rest()  # worked 0.5 s: rests 1.5 s, so busy a quarter of the time
    clock[0] += 0.2
    await pace.rest()
    await pace.rest(at_least=0.5)  # nothing worked since: only the floor
    clock[0] += 3.0
    await pace.rest()  # 9 s would be due: capped
    assert slept == pytest.approx([1.5, 0.6, 0.5, 4.0])


async def test_a_pace_rests_only_while_the_api_is_busy():
    clock, slept, busy = [100.0], [], [False]

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    async def others_busy() -> bool:
        return busy[0]

    pace = summaries.Pace(0.25, clock=lambda: clock[0], sleep=sleep, others_busy=others_busy)
    clock[0] += 0.5
    await pace.rest()  # nobody waits: no rest
    clock[0] += 0.5
    await pace.rest(at_least=0.25)  # the floor still holds
    busy[0] = True
    clock[0] += 0.5
    await pace.rest()
    assert slept == pytest.approx([0.0, 0.25, 1.5])


async def test_the_apis_requests_per_second_reach_the_drain_through_redis(settings, redis):
    prefix = f"load-test-{ObjectId()}:"
    meter = RequestMeter(redis, prefix=prefix, health=RedisHealth())
    assert await api_requests_per_second(redis, prefix=prefix) == 0.0
    second = int(time.time())
    for _ in range(30):
        meter.hit()
    await asyncio.sleep(second + 1 - time.time())  # a count is sent once its second is over
    meter.hit()
    for _ in range(100):
        if await api_requests_per_second(redis, prefix=prefix):
            break
        await asyncio.sleep(0.01)
    rate = await api_requests_per_second(redis, prefix=prefix)
    assert rate is not None and rate >= 30 - 1  # the second may have turned mid-loop
    assert await api_busy(redis, prefix=prefix, threshold=5)()
    assert not await api_busy(redis, prefix=prefix, threshold=1000)()


async def test_ratings_stamped_by_the_earlier_scheme_are_migrated_then_drained(client, db):
    movie = await _movie()
    rating = factories.rating(movie_id=movie.id, user_id=await _user(), score=4.5)
    await rating.insert()
    await db.ratings.create_index("pending", name=PENDING_INDEX, sparse=True)
    await db.ratings.update_one({"_id": rating.id}, {"$set": {"pending": ObjectId()}})
    await db.migrations.delete_many({})
    assert [step.version for step in await migrate()] == [1, 2]
    assert await migrate() == []  # once per database
    await _drain(settle=0)
    assert (await db.movies.find_one({"_id": movie.id}))["rating"]["count"] == 1
    assert PENDING_INDEX not in await db.ratings.index_information()
    assert await db.ratings.count_documents({"pending": {"$exists": True}}) == 0


async def test_a_running_imports_intents_wait_for_its_job(client, db):
    movie = await _movie()
    job_id = ObjectId()
    await db.import_jobs.insert_one({"_id": job_id, "status": "running"})
    await summaries.record_intent(movie_ids=[movie.id], job_id=job_id)
    assert (await summaries.drain_once(prior_votes=10, batch=100, settle=1.0)).empty
    await db.import_jobs.update_one({"_id": job_id}, {"$set": {"status": "failed"}})
    report = await summaries.drain_once(prior_votes=10, batch=100, settle=1.0)
    assert report.movies == [movie.id] and report.taken == 1


async def test_a_command_line_imports_intents_wait_until_it_falls_silent(client, db):
    movie = await _movie()
    tag = ObjectId()  # `python -m seed movielens` has no job: its intents carry a fresh tag
    await summaries.record_intent(movie_ids=[movie.id], job_id=tag)
    assert (await summaries.drain_once(prior_votes=10, batch=100, settle=1.0)).empty
    quiet = utcnow() - summaries.IMPORT_TAG_QUIET - timedelta(seconds=1)
    await db.summary_intents.update_many({"job_id": tag}, {"$set": {"created_at": quiet}})
    assert (await summaries.drain_once(prior_votes=10, batch=100, settle=1.0)).movies == [movie.id]


async def test_a_deleted_movies_ratings_are_purged_and_its_raters_recomputed(client, db):
    movie, user = await _movie(), User(username="u", display_name="u")
    await user.insert()
    await _stamped(movie, user.id, 5.0)
    await _drain()
    assert (await db.users.find_one({"_id": user.id}))["stats"]["count"] == 1
    await summaries.record_intent(movie_ids=[movie.id])
    await movie.delete()
    report = await _drain()
    assert report.purged_movies == [movie.id]
    assert await db.ratings.count_documents({}) == 0
    assert (await db.users.find_one({"_id": user.id}))["stats"]["count"] == 0
    assert await db.summary_intents.count_documents({}) == 0


async def test_weighted_scores_move_only_when_the_global_mean_does(client, db):
    movies = [await _movie(f"M{i}") for i in range(5)]
    for i, movie in enumerate(movies):
        await _stamped(movie, await _user(), 1.0 + i)
    await _drain()
    batches: list[list] = []

    async def changed(ids: list) -> None:
        batches.append(ids)

    # First publication of C = 3.0: every rated movie is rewritten, batch by batch.
    n = await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01, changed=changed)
    assert n == 5 and sum(len(b) for b in batches) == 5
    top = (await db.movies.find_one({"_id": movies[-1].id}))["rating"]
    assert abs(top["weighted"] - (1 / 11 * 5.0 + 10 / 11 * 3.0)) < 1e-9
    # One more 3.5 moves C by 0.083: within a tolerance of 0.1 nothing is rewritten.
    await _stamped(movies[0], await _user(), 3.5)
    await _drain()
    batches.clear()
    assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.1) == 0
    assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01) == 5
    assert (await db.global_stats.find_one({"_id": "ratings"}))["mean"] == 18.5 / 6


async def test_refresh_task_publishes_the_global_mean(api, client, db, settings):
    admin = await api.user("root", admin=True)
    hit = await api.movie(admin, title="Hit")
    raters = [await api.user() for _ in range(3)]
    for r in raters:
        await api.rate(r, hit["id"], 5.0)

    async def counted():
        doc = await db.movies.find_one({"_id": PydanticObjectId(hit["id"])})
        return doc["rating"]["count"] == 3

    await eventually(counted)
    await db.global_stats.delete_many({})
    producer = make_producer(settings)
    try:
        await asyncio.to_thread(producer.send_task, REFRESH_WEIGHTED)
    finally:
        producer.close()

    async def published():
        return await db.global_stats.find_one({"_id": "ratings", "votes": 3})

    assert (await eventually(published))["mean"] == 5.0


async def test_request_id_reaches_the_worker_logs(api, client, services, redis):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    alice = await api.user("alice")

    async def logged():
        return "trace-me-0042" in worker_log(services)

    # Queueing a drain is the fast path (the write's intent is durable either way): under
    # load a Redis call can time out and the breaker skip one send, so the write is repeated.
    for attempt in range(5):
        await redis.delete(DRAIN_PENDING_KEY)  # this write queues the drain, with its id
        resp = await client.put(
            f"{API}/movies/{movie['id']}/rating",
            json={"score": 4.0 if attempt % 2 == 0 else 3.5},
            headers={**alice["auth"], "X-Request-ID": "trace-me-0042"},
        )
        assert resp.status in (200, 201)
        try:
            await eventually(logged, timeout=10)
            return
        except AssertionError:
            continue
    raise AssertionError("the request id never reached the worker's log")


async def test_malformed_task_arguments_are_dropped_not_retried(settings, worker, db):
    producer = make_producer(settings)
    try:
        await asyncio.to_thread(producer.send_task, RUN_IMPORT, args=["not-an-id"])
    finally:
        producer.close()

    async def dropped():
        return "malformed id" in worker_log(worker)

    await eventually(dropped)


async def test_a_round_takes_the_oldest_writes_up_to_its_batch_and_the_next_the_rest(client, db):
    movies = [await _movie(f"M{i}") for i in range(5)]
    rater = await _user()
    past = await summaries.server_now() - timedelta(seconds=60)
    for i, movie in enumerate(movies):
        rating_id = await _stamped(movie, rater, 3.0)
        stamp = past + timedelta(seconds=i // 2)  # two writes share each instant
        await db.ratings.update_one({"_id": rating_id}, {"$set": {"changed_at": stamp}})
    # A batch counts summaries: the first instant names two movies and the rater (three);
    # the second would add two more movies, and an instant is never split.
    first = await summaries.drain_once(prior_votes=10, batch=3, settle=0)
    assert first.taken == 2 and first.more and not first.waiting
    assert await summaries.undrained() == 3
    second = await summaries.drain_once(prior_votes=10, batch=3, settle=0)
    assert second.taken == 2 and second.more
    third = await summaries.drain_once(prior_votes=10, batch=3, settle=0)
    assert third.taken == 1 and not third.more
    assert await summaries.undrained() == 0
    for movie in movies:
        assert (await db.movies.find_one({"_id": movie.id}))["rating"]["count"] == 1
    assert (await db.users.find_one({"_id": rater}))["stats"]["count"] == 5


async def test_a_backlog_of_writes_to_the_same_movies_is_one_round(client, db, monkeypatch):
    movies = [await _movie(f"M{i}") for i in range(3)]
    raters = [await _user() for _ in range(3)]
    past = await summaries.server_now() - timedelta(seconds=60)
    for i, (movie, rater) in enumerate((m, r) for m in movies for r in raters):
        rating_id = await _stamped(movie, rater, 3.0)
        await db.ratings.update_one(
            {"_id": rating_id}, {"$set": {"changed_at": past + timedelta(seconds=i)}}
        )
    # Nine writes name six summaries: one round of six takes them all.
    report = await summaries.drain_once(prior_votes=10, batch=6, settle=0)
    assert report.taken == 9 and not report.more
    assert len(report.movies) == 3 and len(report.users) == 3
    assert await summaries.undrained() == 0

    # The writes a round reads are bounded too (WRITES_PER_SUMMARY per summary).
    await db.drain_marks.delete_many({})
    monkeypatch.setattr(summary_drain, "WRITES_PER_SUMMARY", 1)
    bounded = await summaries.drain_once(prior_votes=10, batch=6, settle=0)
    assert bounded.taken == 6 and bounded.more


async def test_one_instant_larger_than_a_batch_is_taken_whole(client, db):
    movies = [await _movie(f"M{i}") for i in range(3)]
    past = await summaries.server_now() - timedelta(seconds=60)
    for movie in movies:
        rating_id = await _stamped(movie, await _user(), 3.0)
        await db.ratings.update_one({"_id": rating_id}, {"$set": {"changed_at": past}})
    report = await summaries.drain_once(prior_votes=10, batch=2, settle=0)
    assert report.taken == 3 and await summaries.undrained() == 0


async def test_no_mean_is_published_from_summaries_that_lag_the_writes(client, db):
    movie = await _movie()
    await _stamped(movie, await _user(), 5.0)
    await _drain(settle=0)
    await db.global_stats.update_one({"_id": "ratings"}, {"$set": {"mean": 1.0}})
    # A write the drains have not taken for 30 s (they fell behind).
    rating_id = await _stamped(movie, await _user(), 1.0)
    old = await summaries.server_now() - timedelta(seconds=30)
    await db.ratings.update_one({"_id": rating_id}, {"$set": {"changed_at": old}})
    await db.drain_marks.update_one({}, {"$set": {"drained_before": old}})
    assert await summaries.drain_lag() >= 30
    assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01, max_lag=10) == 0
    assert (await db.global_stats.find_one({"_id": "ratings"}))["mean"] == 1.0
    await _drain(settle=0)
    assert await summaries.drain_lag() == 0
    assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01, max_lag=10)
    assert (await db.global_stats.find_one({"_id": "ratings"}))["mean"] == 3.0


async def test_a_round_whose_writes_an_import_took_over_stops(client, db):
    movies = [await _movie(f"M{i}") for i in range(server_profile().paced_write_batch * 3)]
    rater = await _user()
    for movie in movies:
        await _stamped(movie, rater, 3.0)
    await asyncio.sleep(0.01)
    intent = await summaries.record_intent(movie_ids=[movies[0].id])
    taken_over = await summaries.server_now() + timedelta(seconds=5)
    rests = 0

    async def rest(_: float) -> None:
        nonlocal rests
        rests += 1
        if rests == 1:  # an import's last step recomputed the writes and moved the mark
            await summaries.move_mark(taken_over)

    pace = summaries.Pace(0.5, sleep=rest)
    report = await summaries.drain_once(prior_votes=10, batch=1000, settle=0, pace=pace)
    # It stored its first write's summaries, then stopped: no further writes, and the mark
    # and the intent are left as the takeover left them.
    assert len(report.movies) == server_profile().paced_write_batch and rests == 1
    assert await summaries.drained_before() > taken_over - timedelta(milliseconds=1)
    assert await db.summary_intents.find_one({"_id": intent}) is not None
    # The next round (nothing overtakes it) takes the intent.
    again = await summaries.drain_once(prior_votes=10, batch=1000, settle=0, pace=pace)
    assert again.movies == [movies[0].id] and await summaries.undrained() == 0
