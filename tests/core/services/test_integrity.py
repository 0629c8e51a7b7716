"""What keeps stored data whole: the import lease, ids read back from the database, no
orphan ratings, weighted scores that converge, and queued imports that always run."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from bson import ObjectId

from api.handlers.imports import job_view
from core import summaries
from core.imports import jobs as imports
from core.imports.release import MovieLensRelease
from core.imports.source import Source
from core.imports.writer import MovieLensImport
from core.store import movies as movie_store
from core.store import summaries as summary_store
from core.store.leases import IMPORT_LEASE, FencedLease, LeaseBusy, LeaseLost, holder_of
from models import ImportJob, utcnow
from tests.seed.releases import write_release


async def _import(path: Any, **options: Any) -> Any:
    source = MovieLensRelease(Source(path))
    try:
        return await MovieLensImport(source, batch_size=2, **options).run()
    finally:
        source.close()


def _lease(holder: str, ttl: float = 30.0) -> FencedLease:
    return FencedLease(IMPORT_LEASE, holder=holder, ttl=ttl)


async def test_a_lease_has_one_holder_and_a_new_grant_fences_the_old(odm):
    first = _lease("job:a")
    assert await first.acquire() == 1
    with pytest.raises(LeaseBusy) as busy:
        await _lease("job:b").acquire()
    assert busy.value.holder == "job:a"
    # The same job again (a redelivery): a new grant, and the old one is fenced off.
    again = _lease("job:a")
    assert await again.acquire() == 2
    with pytest.raises(LeaseLost):
        await first.confirm()
    with pytest.raises(LeaseLost):
        await first.renew()
    await first.release()  # not its grant any more: changes nothing
    assert await holder_of(IMPORT_LEASE) == "job:a"
    await again.release()
    assert await holder_of(IMPORT_LEASE) is None


async def test_an_expired_lease_goes_to_the_next_asker(odm):
    stalled = _lease("job:a", ttl=0.05)
    await stalled.acquire()
    await asyncio.sleep(0.1)
    assert await holder_of(IMPORT_LEASE) is None
    assert await _lease("job:b").acquire() == 2
    with pytest.raises(LeaseLost):
        await stalled.confirm()


async def test_two_imports_of_one_release_at_once_write_it_once(odm, tmp_path):
    folder = write_release(tmp_path / "rel")
    results = await asyncio.gather(
        _import(folder, lease=_lease("cli:one")),
        _import(folder, lease=_lease("cli:two")),
        return_exceptions=True,
    )
    assert sum(isinstance(r, LeaseBusy) for r in results) == 1
    assert await odm.ratings.count_documents({}) == 6
    assert (await summaries.orphans()).ratings == 0
    for target in (summaries.MOVIES, summaries.USERS):
        checked, differences = await summaries.verify(target, prior_votes=10)
        assert checked and not differences
    # The second one, run after the first ended, finds everything in place.
    again = await _import(folder, lease=_lease("cli:two"))
    assert again.ratings.unchanged == 6 and again.movies.unchanged == 4


async def test_an_import_that_lost_its_lease_stops_before_its_next_batch(odm, tmp_path):
    lease = _lease("job:slow")

    class Thief(MovieLensImport):
        async def _import_ratings(self) -> None:
            # As if this run stalled past its expiry and another took the lease meanwhile.
            await odm.leases.update_one(
                {"_id": IMPORT_LEASE}, {"$set": {"holder": "job:other"}, "$inc": {"fence": 1}}
            )
            await super()._import_ratings()

    source = MovieLensRelease(Source(write_release(tmp_path / "rel")))
    try:
        importer = Thief(source, batch_size=2, lease=lease)
        with pytest.raises(LeaseLost):
            await importer.run()
    finally:
        source.close()
    # At most the one batch written before its first check after the theft.
    assert await odm.ratings.count_documents({}) <= 2


async def test_new_documents_take_the_ids_the_database_stored(odm):
    stored = await odm.movies.insert_one({"title": "X", "external_ids": {"movielens": 7}})
    ids = await movie_store.insert_imported(
        {
            7: {"title": "X again", "external_ids": {"movielens": 7, "imdb": "tt1"}},
            8: {"title": "Y", "external_ids": {"movielens": 8, "imdb": "tt2", "tmdb": 3}},
        },
    )
    assert ids[7] == stored.inserted_id  # kept, not doubled, and not a made-up id
    assert await odm.movies.count_documents({}) == 2
    y = await odm.movies.find_one({"_id": ids[8]})
    assert y["external_ids"] == {"movielens": 8, "imdb": "tt2", "tmdb": 3}


async def test_orphan_ratings_are_found_and_healed(odm, tmp_path):
    await _import(write_release(tmp_path / "rel"))
    heat = await odm.movies.find_one({"external_ids.movielens": 4})
    await odm.movies.delete_one({"_id": heat["_id"]})  # gone without its ratings' purge
    found = await summaries.orphans()
    assert found.movies == [heat["_id"]] and found.ratings == 2
    purged = await summaries.heal_orphans(found.ids, prior_votes=10)
    assert purged == [heat["_id"]]
    assert (await summaries.orphans()).ratings == 0
    one = await odm.users.find_one({"username": "movielens-1"})
    assert one["stats"]["count"] == 2 and one["stats"]["sum"] == 9.0


async def test_an_import_never_leaves_ratings_of_a_movie_that_went_meanwhile(odm, tmp_path):
    class Deleting(MovieLensImport):
        async def _import_ratings(self) -> None:
            await super()._import_ratings()
            await odm.movies.delete_one({"external_ids.movielens": 4})  # an admin, meanwhile

    source = MovieLensRelease(Source(write_release(tmp_path / "rel")))
    try:
        await Deleting(source, batch_size=2).run()
    finally:
        source.close()
    assert (await summaries.orphans()).ratings == 0
    for target in (summaries.MOVIES, summaries.USERS):
        _, differences = await summaries.verify(target, prior_votes=10)
        assert not differences


async def test_a_recomputation_that_read_an_old_mean_loses_to_the_rewrite(
    odm, tmp_path, monkeypatch
):
    await _import(write_release(tmp_path / "rel"))
    toy = await odm.movies.find_one({"external_ids.movielens": 1})
    real = summary_store.histograms
    raced = False

    async def racing(target: Any, ids: list, **kwargs: Any) -> dict:
        nonlocal raced
        counts = await real(target, ids, **kwargs)
        if not raced and target is summaries.MOVIES:
            raced = True
            # After this recomputation read the versions and C: C moves and every weighted
            # score is rewritten with it.
            await odm.global_stats.update_one({"_id": "ratings"}, {"$set": {"mean": 1.0}})
            assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01)
        return counts

    monkeypatch.setattr(summary_store, "histograms", racing)
    await summaries.recompute_movies([toy["_id"]], prior_votes=10)
    published = (await odm.global_stats.find_one({"_id": "ratings"}))["mean"]
    stored = (await odm.movies.find_one({"_id": toy["_id"]}))["rating"]
    assert stored["prior_mean"] == published
    expected = summaries.weighted_score(count=3, mean=4.0, prior_votes=10, prior_mean=published)
    assert stored["weighted"] == pytest.approx(expected, rel=1e-12)
    _, differences = await summaries.verify(summaries.MOVIES, prior_votes=10)
    assert not differences


async def test_a_movie_weighted_with_another_mean_is_rewritten_within_tolerance(odm, tmp_path):
    await _import(write_release(tmp_path / "rel"))
    toy = await odm.movies.find_one({"external_ids.movielens": 1})
    await odm.movies.update_one(
        {"_id": toy["_id"]}, {"$set": {"rating.weighted": 1.0, "rating.prior_mean": 0.5}}
    )
    _, differences = await summaries.verify(summaries.MOVIES, prior_votes=10)
    assert [d.id for d in differences] == [str(toy["_id"])]
    # C has not moved: only the movie weighted with another C is rewritten.
    assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01) == 1
    _, differences = await summaries.verify(summaries.MOVIES, prior_votes=10)
    assert not differences


async def test_no_mean_is_published_while_an_import_writes(odm, tmp_path):
    await _import(write_release(tmp_path / "rel"))
    await odm.global_stats.update_one({"_id": "ratings"}, {"$set": {"mean": 1.0}})
    async with _lease("job:running").held():
        assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01) == 0
        assert (await odm.global_stats.find_one({"_id": "ratings"}))["mean"] == 1.0
    assert await summaries.refresh_weighted_scores(prior_votes=10, tolerance=0.01) == 4


class RecordingQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[str, tuple[Any, ...]]] = []

    async def send(self, name: str, *args: Any, countdown: float | None = None) -> None:
        self.sent.append((name, args))


async def test_a_queued_job_whose_message_was_lost_is_sent_again(odm):
    lost = ImportJob(source="movielens", path="x", sent_at=utcnow() - timedelta(seconds=60))
    fresh = ImportJob(source="movielens", path="y", sent_at=utcnow())
    running = ImportJob(source="movielens", path="z", status="running")
    for job in (lost, fresh, running):
        await job.insert()
    queue = RecordingQueue()
    assert await imports.resend_unsent(queue=queue, older_than=30) == [str(lost.id)]  # type: ignore[arg-type]
    assert queue.sent == [(imports.RUN_IMPORT, (str(lost.id),))]
    # Sent again just now: not again until the bound has passed once more.
    assert await imports.resend_unsent(queue=queue, older_than=30) == []  # type: ignore[arg-type]


async def test_a_job_behind_another_import_waits_queued(odm, settings, tmp_path):
    write_release(tmp_path / "rel")
    job = ImportJob(source="movielens", path="rel")
    await job.insert()

    settings = settings.model_copy(update={"import_root": tmp_path})
    async with _lease("job:" + str(ObjectId())).held():
        status = await imports.run_job(job_id=job.id, settings=settings)
    assert status == "queued"
    stored = await odm.import_jobs.find_one({"_id": job.id})
    assert stored["status"] == "queued" and stored["waiting_for"].startswith("job:")
    assert stored["attempts"] == 0 and await odm.ratings.count_documents({}) == 0
    assert job_view(ImportJob.model_validate(stored))["waiting_for"] == stored["waiting_for"]
    # Once the other import has ended, the job runs.
    status = await imports.run_job(job_id=job.id, settings=settings)
    assert status == "succeeded"
    assert await odm.ratings.count_documents({}) == 6
    assert (await odm.import_jobs.find_one({"_id": job.id}))["waiting_for"] is None


async def test_a_username_the_import_needs_taken_by_someone_fails_the_job_for_good(
    odm, settings, tmp_path
):
    write_release(tmp_path / "rel")
    await odm.users.insert_one({"username": "movielens-1", "display_name": "squatter"})
    job = ImportJob(source="movielens", path="rel")
    await job.insert()

    settings = settings.model_copy(update={"import_root": tmp_path})
    status = await imports.run_job(job_id=job.id, settings=settings)
    assert status == "failed"
    stored = await odm.import_jobs.find_one({"_id": job.id})
    assert "username" in stored["error"] and "taken" in stored["error"]
    assert await holder_of(IMPORT_LEASE) is None  # given back: the next import can run
