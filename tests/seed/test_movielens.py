"""The MovieLens importer against SecantusDB: parsing, idempotency, updates, bad rows."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from core.imports.release import MovieLensRelease, parse_genres, parse_title
from core.imports.source import Source
from core.imports.writer import Hooks, ImportCancelled, MovieLensImport
from models import ImportReport
from tests.seed import ml_small
from tests.seed.releases import LINKS, MOVIES, RATINGS, write_release, zip_release


async def _import(path, **options):
    source = MovieLensRelease(Source(path))
    try:
        return await MovieLensImport(
            source, batch_size=options.pop("batch_size", 2), **options
        ).run()
    finally:
        source.close()


async def _snapshot(db):
    """Everything an import writes, keyed by MovieLens ids (ObjectIds differ between runs)."""
    movies = {m["_id"]: m async for m in db.movies.find({})}
    users = {u["_id"]: u async for u in db.users.find({})}
    ratings = sorted(
        [
            (
                users[r["user_id"]]["external_ids"]["movielens"],
                movies[r["movie_id"]]["external_ids"]["movielens"],
                r["score"],
                r["rated_at"],
            )
            async for r in db.ratings.find({})
        ]
    )
    summaries = sorted(
        (
            m["external_ids"]["movielens"],
            m["title"],
            m["year"],
            tuple(m["genres"]),
            m["rating"]["count"],
            m["rating"]["mean"],
            tuple(m["rating"]["histogram"]),
        )
        for m in movies.values()
    )
    stats = sorted((u["username"], u["stats"]["count"], u["stats"]["mean"]) for u in users.values())
    return ratings, summaries, stats


def test_titles_years_and_genres():
    assert parse_title("Toy Story (1995)") == ("Toy Story", 1995)
    assert parse_title("Babylon 5") == ("Babylon 5", None)
    assert parse_title("Big Bang Theory, The (2007-)") == ("Big Bang Theory, The (2007-)", None)
    assert parse_title("1984 (1984) ") == ("1984", 1984)
    assert parse_genres("(no genres listed)") == []
    assert parse_genres("Action|Western") == ["Action", "Western"]


async def test_import_then_reimport_changes_nothing(odm, tmp_path):
    folder = write_release(tmp_path / "rel")
    first = await _import(folder)
    assert (first.movies.inserted, first.users.inserted, first.ratings.inserted) == (4, 3, 6)
    assert first.tags == 2 and first.bad_rows == 0
    assert first.progress["ratings.csv"].model_dump() == {"done": 6, "total": 6}
    # The phases after the files are progress items too: the 3 rated movies and 3 users
    # recomputed, then the unrated movie's weighted score under the first C.
    assert first.progress["summaries"].model_dump() == {"done": 6, "total": 6}
    assert first.progress["weighted scores"].model_dump() == {"done": 1, "total": 1}
    before = await _snapshot(odm)
    second = await _import(zip_release(folder, tmp_path / "rel.zip"))
    assert (second.movies.unchanged, second.users.unchanged, second.ratings.unchanged) == (4, 3, 6)
    assert second.movies.inserted + second.ratings.inserted + second.ratings.updated == 0
    assert await _snapshot(odm) == before

    toy = await odm.movies.find_one({"external_ids.movielens": 1})
    assert (toy["title"], toy["year"]) == ("Toy Story", 1995)
    assert toy["external_ids"] == {"movielens": 1, "imdb": "tt0114709", "tmdb": 862}
    assert toy["rating"]["count"] == 3 and toy["rating"]["mean"] == 4.0
    cosmos = await odm.movies.find_one({"external_ids.movielens": 3})
    assert cosmos["year"] is None and cosmos["genres"] == []
    assert cosmos["external_ids"]["imdb"] is None and cosmos["rating"]["mean"] is None
    user = await odm.users.find_one({"username": "movielens-1"})
    assert user["password_hash"] is None and user["external_ids"] == {"movielens": 1}
    assert user["stats"]["count"] == 3 and user["stats"]["mean"] == 12.5 / 3
    rating = await odm.ratings.find_one({"user_id": user["_id"], "movie_id": toy["_id"]})
    assert rating["rated_at"] == datetime.fromtimestamp(964982703, UTC)
    assert (await odm.global_stats.find_one({"_id": "ratings"}))["votes"] == 6


@pytest.mark.parametrize("batch_size", [2, 1000])
async def test_two_records_of_one_film_in_a_release_become_one(odm, tmp_path, batch_size):
    """MovieLens 5 is Toy Story again (its TMDb id): no second record; its ratings go to
    Toy Story, where a person who rated both keeps the newer rating, run after run."""
    folder = write_release(
        tmp_path / "rel",
        movies=[*MOVIES, (5, "Toy Story (1995)", "Animation")],
        links=[*LINKS, (5, "", "862")],
        ratings=[
            *RATINGS,
            (1, 5, "2.0", 964990000),  # newer than user 1's 4.0 for movie 1: it wins
            (2, 5, "4.5", 1445000000),  # older than user 2's 3.0 for movie 1: it loses
        ],
    )
    first = await _import(folder, batch_size=batch_size)
    assert first.merged == 1 and first.movies.inserted == 4
    assert await odm.movies.count_documents({}) == 4
    toy = await odm.movies.find_one({"external_ids.movielens": 1})
    scores = sorted([r["score"] async for r in odm.ratings.find({"movie_id": toy["_id"]})])
    assert scores == [2.0, 3.0, 5.0] and toy["rating"]["count"] == 3
    before = await _snapshot(odm)
    again = await _import(folder, batch_size=batch_size)
    assert again.merged == 1 and again.ratings.inserted + again.ratings.updated == 0
    assert await _snapshot(odm) == before


async def test_newer_release_updates_changed_rows_and_adds_new_ones(odm, tmp_path):
    await _import(write_release(tmp_path / "v1"))
    movies = [*MOVIES[:3], (4, "Heat (1995)", "Action|Crime|Drama|Thriller"), (5, "Up (2009)", "")]
    ratings = [*RATINGS[:5], (3, 1, "1.0", 1306463999), (3, 5, "4.5", 1306464000)]
    links = [
        (1, "0114709", "862"),
        (2, "0060196", "429"),
        (3, "", ""),
        (4, "0113277", "949"),
        (5, "1049413", "14160"),
    ]
    report = await _import(
        write_release(tmp_path / "v2", movies=movies, ratings=ratings, links=links)
    )
    assert (report.movies.inserted, report.movies.updated, report.movies.unchanged) == (1, 1, 3)
    assert (report.ratings.inserted, report.ratings.updated, report.ratings.unchanged) == (1, 1, 5)
    toy = await odm.movies.find_one({"external_ids.movielens": 1})
    assert toy["rating"]["mean"] == (4.0 + 3.0 + 1.0) / 3
    up = await odm.movies.find_one({"external_ids.movielens": 5})
    assert up["rating"]["count"] == 1 and up["genres"] == []


async def test_bad_rows_are_counted_with_file_and_line_and_never_fatal(odm, tmp_path):
    folder = write_release(
        tmp_path / "rel",
        extra_lines={
            "ratings.csv": [
                "1,1,4.3,964982703",
                "x,1,4.0,1",
                "1,999,4.0,1",
                "1,3,5.0",
                "2,3,6.0,1",
                "3,3,4.0,notatime",
            ],
            "movies.csv": ["oops,Broken,Drama", "1,Toy Story again (1995),Comedy"],
            "links.csv": ["5,tt12,x"],
        },
    )
    report = await _import(folder)
    assert report.ratings.inserted == 6 and report.bad_rows == 9
    reasons = {(b.file, b.line): b.reason for b in report.bad_samples}
    assert "4.3" in reasons[("ratings.csv", 8)]
    assert "positive integers" in reasons[("ratings.csv", 9)]
    assert "unknown movieId 999" in reasons[("ratings.csv", 10)]
    assert "expected 4 fields" in reasons[("ratings.csv", 11)]
    assert "6.0" in reasons[("ratings.csv", 12)]
    assert "timestamp" in reasons[("ratings.csv", 13)]
    assert "duplicate movieId 1" in reasons[("movies.csv", 7)]
    assert ("links.csv", 6) in reasons


async def test_dry_run_counts_but_writes_nothing(odm, tmp_path):
    report = await _import(write_release(tmp_path / "rel"), dry_run=True)
    assert (report.movies.inserted, report.ratings.inserted) == (4, 6)
    for name in ("movies", "users", "ratings"):
        assert await odm[name].count_documents({}) == 0


class _Crash(Hooks):
    """Dies after a few batches, as a killed worker would."""

    def __init__(self, after: int) -> None:
        self.left = after

    async def advanced(self, name, rows, report):
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt("worker killed")


class _Cancel(Hooks):
    async def cancelled(self):
        return True


async def test_interrupted_import_rerun_equals_an_uninterrupted_one(odm, tmp_path):
    folder = write_release(tmp_path / "rel")
    await _import(folder, batch_size=1)
    clean = await _snapshot(odm)
    for name in ("movies", "users", "ratings", "global_stats"):
        await odm[name].delete_many({})
    with pytest.raises(KeyboardInterrupt):
        await _import(folder, batch_size=1, hooks=_Crash(after=9))  # mid-way through ratings
    assert 0 < await odm.ratings.count_documents({}) < 6
    rerun = await _import(folder, batch_size=1)
    assert rerun.ratings.inserted + rerun.ratings.unchanged == 6
    assert await _snapshot(odm) == clean


async def test_cancelled_import_stops_at_a_batch_boundary(odm, tmp_path):
    with pytest.raises(ImportCancelled):
        await _import(write_release(tmp_path / "rel"), hooks=_Cancel())
    assert await odm.ratings.count_documents({}) == 0


async def _ml_small_result(started: tuple[subprocess.Popen, Path]) -> dict[str, Any]:
    proc, work = started
    # Started at collection, in its own process and server (tests/seed/ml_small.py).
    returncode = await asyncio.to_thread(proc.wait, 280)
    log = (work / "import.log").read_text(errors="replace")[-3000:]
    assert returncode == 0, log
    return json.loads((work / ml_small.RESULT).read_text())


async def test_ml_latest_small_searches_find_the_film_in_the_top_3(ml_small_import):
    searches = (await _ml_small_result(ml_small_import))["searches"]
    missed = {q: searches[q] for q, film in ml_small.SEARCHES if film not in searches[q]}
    assert len(ml_small.SEARCHES) >= 30 and not missed


async def test_ml_latest_small_similar_lists_are_believable(ml_small_import):
    """No film fewer than 10 people like in the top 10 similar to five well-known films
    (the SIMILAR_MIN_LIKES default), each with its reason, and the good heads stay."""
    similar = (await _ml_small_result(ml_small_import))["similar"]
    assert set(similar) == {str(film) for film in ml_small.SIMILAR_TO}
    for film, items in similar.items():
        assert len(items) == 10 and min(i["likes"] for i in items) >= 10, (film, items)
        assert all(re.fullmatch(r"\d+ of the \d+ people who like .+ like it too", i["reason"])
                   for i in items)  # fmt: skip
    fellowship = [i["title"] for i in similar["4993"][:2]]
    assert sorted(fellowship) == [
        "The Lord of the Rings: The Return of the King",
        "The Lord of the Rings: The Two Towers",
    ]
    assert similar["1"][0]["title"] == "Toy Story 2"


async def test_ml_latest_small_exact_counts_and_idempotent(ml_small_import):
    result = await _ml_small_result(ml_small_import)
    first, again = ImportReport(**result["first"]), ImportReport(**result["again"])
    # MovieLens 144606 is 6003 again (Confessions of a Dangerous Mind, the same TMDb id):
    # one record, and the one person who rated both keeps one rating.
    assert (first.movies.inserted, first.users.inserted, first.ratings.inserted) == (
        9741,
        610,
        100835,
    )
    assert first.merged == 1 and first.bad_rows == 0
    assert result["counts"] == {"movies": 9741, "users": 610, "ratings": 100835}
    toy = result["toy"]
    assert toy["count"] == 215
    assert round(toy["mean"], 6) == 3.920930
    assert toy["histogram"] == [1, 0, 1, 6, 8, 34, 18, 82, 18, 47]
    # The import recomputed what its batches recorded, and cleared those intents.
    assert result["left"] == {"marked": 0, "intents": 0}
    assert (again.movies.unchanged, again.users.unchanged, again.ratings.unchanged) == (
        9741,
        610,
        100836,
    )
    assert again.movies.inserted + again.movies.updated + again.ratings.inserted == 0
    assert again.ratings.updated == 0
    # A model trained after the first import is not made stale by an unchanged one.
    assert result["due_after_training"] is None and result["due_after_unchanged_import"] is None


class _Batches(Hooks):
    def __init__(self) -> None:
        self.written: list[tuple[int, int]] = []

    async def movies_written(self, *, inserted, updated) -> None:
        self.written.append((len(inserted), len(updated)))


async def test_each_batch_of_movies_is_announced_as_it_lands(odm, tmp_path, redis, settings):
    """Searches see an import's films batch by batch: every stored batch is announced (the
    job's hooks bump the list, genre and changed movies' cache versions)."""
    from beanie import PydanticObjectId

    from core.cache import cache_for
    from core.imports.jobs import JobHooks

    release = write_release(tmp_path / "rel")
    hooks = _Batches()
    await _import(release, hooks=hooks)
    assert len(MOVIES) == 4 and hooks.written == [(2, 0), (2, 0)]  # batch_size 2
    again = _Batches()
    await _import(release, hooks=again)  # nothing changed: nothing to announce
    assert again.written == []

    cache = cache_for(settings, redis)
    lists, genres = f"{settings.mongodb_db}:v:movies", cache.keys.genres().version
    before = [int(await redis.get(k) or 0) for k in (lists, genres)]
    changed = PydanticObjectId()
    await JobHooks(PydanticObjectId(), cache).movies_written(inserted=[], updated=[changed])
    after = [int(await redis.get(k) or 0) for k in (lists, genres)]
    assert after == [b + 1 for b in before]
    assert int(await redis.get(cache.keys.movie(changed).version)) == 1


async def test_imported_titles_read_as_people_write_them(odm, tmp_path):
    await _import(write_release(tmp_path / "rel"))
    good = await odm.movies.find_one({"external_ids.movielens": 2})
    assert good["title"] == "The Good, the Bad and the Ugly"
    assert good["title_key"] == "the good, the bad and the ugly"
    assert good["source_title"] == "Good, the Bad and the Ugly, The (1966)"
    assert good["aliases"] == [] and good["year"] == 1966


async def test_an_import_joins_the_films_already_in_the_catalogue(odm, tmp_path):
    """One record per film: the shipped sample's films are matched by IMDb id, a film added
    by hand without ids by title and year; they take the MovieLens ids instead of being
    added twice, and ratings land on them."""
    from models import Movie, title_key
    from seed.sample import seed_sample

    added = await seed_sample()
    await Movie(title="Heat", title_key=title_key("Heat"), year=1995).insert()
    report = await _import(write_release(tmp_path / "rel"))
    # Toy Story and The Good, the Bad and the Ugly are the sample's; Heat the hand-made one.
    assert (report.movies.inserted, report.movies.updated) == (1, 3)
    assert await odm.movies.count_documents({}) == added + 1 + 1
    for title in ("toy story", "the good, the bad and the ugly", "heat"):
        assert await odm.movies.count_documents({"title_key": title}) == 1, title
    toy = await odm.movies.find_one({"external_ids.movielens": 1})
    assert toy["external_ids"]["imdb"] == "tt0114709" and toy["title"] == "Toy Story"
    rated = await odm.ratings.distinct("movie_id")
    assert toy["_id"] in rated
    again = await _import(write_release(tmp_path / "rel"))
    assert (again.movies.inserted, again.movies.updated) == (0, 0)


async def test_an_import_takes_over_the_rating_writes_no_drain_took_yet(odm, tmp_path):
    """Live ratings written while an import runs are in the summaries when it ends: its
    last step recomputes them with its own and moves the drain's mark past them."""
    from core import summaries
    from core.store.ratings import MARK_CHANGED
    from models import Movie, title_key
    from tests import factories

    live = Movie(title="Live", title_key=title_key("Live"))
    await live.insert()
    rater = factories.user()
    await rater.insert()
    rating = factories.rating(movie_id=live.id, user_id=rater.id, score=4.5)
    await rating.insert()
    await odm.ratings.update_one({"_id": rating.id}, MARK_CHANGED)
    assert await summaries.undrained() == 1

    await _import(write_release(tmp_path / "rel"), drain_settle=0)
    assert await summaries.undrained() == 0
    stored = await odm.movies.find_one({"_id": live.id})
    assert stored["rating"]["count"] == 1 and stored["rating"]["mean"] == 4.5
    assert (await odm.users.find_one({"_id": rater.id}))["stats"]["count"] == 1
