"""Duplicate movies merge into one record each; the newer of two ratings by one user wins."""

from __future__ import annotations

from datetime import timedelta

from beanie import PydanticObjectId

from core import summaries
from core.services.dedupe import dedupe
from models import ExternalIds, Movie, Rating, User, title_key, utcnow

EARLY = utcnow() - timedelta(days=2)
LATE = utcnow() - timedelta(days=1)


async def _movie(title: str, year: int, **ids: int | str) -> Movie:
    ids_model = ExternalIds(**ids)  # type: ignore[arg-type]
    movie = Movie(title=title, title_key=title_key(title), year=year, external_ids=ids_model)
    await movie.insert()
    return movie


async def _rate(movie: Movie, user: User, score: float, when=EARLY) -> None:
    assert movie.id is not None and user.id is not None
    await Rating(
        movie_id=movie.id, user_id=user.id, score=score, rated_at=when, updated_at=when
    ).insert()


async def _scores(db, movie: Movie) -> dict[PydanticObjectId, float]:
    return {r["user_id"]: r["score"] async for r in db.ratings.find({"movie_id": movie.id})}


async def test_duplicates_merge_and_the_newer_rating_wins(client, db):
    u1, u2, u3 = (User(username=f"u{i}", display_name=f"U{i}") for i in range(3))
    for user in (u1, u2, u3):
        await user.insert()
    heat = await _movie("Heat", 1995, imdb="tt0113277", movielens=6)
    heat_copy = await _movie("Heat", 1995, imdb="tt0113277")
    toy = await _movie("Toy Story", 1995, imdb="tt0114709", movielens=1, tmdb=862)
    toy_bare = await _movie("Toy Story", 1995)  # the shipped sample's old record: no ids
    other_heat = await _movie("Heat", 1986, imdb="tt0093164")
    hamlet = await _movie("Hamlet", 2000, movielens=3598)  # same title and year, two films
    hamlet_too = await _movie("Hamlet", 2000, movielens=99999)
    await _rate(heat, u1, 4.0)
    await _rate(heat, u2, 3.0)
    await _rate(heat_copy, u1, 5.0, when=LATE)  # newer: replaces u1's 4.0
    await _rate(heat_copy, u3, 2.0)  # moves
    await _rate(toy, u2, 4.0, when=LATE)
    await _rate(toy, u1, 3.0)
    await _rate(toy_bare, u2, 5.0)  # older than u2's rating of the kept record: dropped

    report = await dedupe(dry_run=True, prior_votes=10)
    merged = {(m.kept["_id"], m.merged["_id"]) for m in report.merges}
    assert merged == {(heat.id, heat_copy.id), (toy.id, toy_bare.id)}
    assert await db.movies.count_documents({}) == 7 and await db.ratings.count_documents({}) == 7

    report = await dedupe(dry_run=False, prior_votes=10)
    assert len(report.merges) == 2
    left = {m["_id"] async for m in db.movies.find({}, {"_id": 1})}
    assert left == {heat.id, toy.id, other_heat.id, hamlet.id, hamlet_too.id}
    assert await _scores(db, heat) == {u1.id: 5.0, u2.id: 3.0, u3.id: 2.0}
    assert await _scores(db, toy) == {u2.id: 4.0, u1.id: 3.0}
    assert await db.ratings.count_documents({}) == 5
    by_heat = next(m for m in report.merges if m.kept["_id"] == heat.id)
    assert (by_heat.moved, by_heat.replaced, by_heat.dropped) == (1, 1, 0)
    by_toy = next(m for m in report.merges if m.kept["_id"] == toy.id)
    assert (by_toy.moved, by_toy.replaced, by_toy.dropped) == (0, 0, 1)

    # Summaries and stats recomputed by the run itself; its intents are gone.
    summary = (await db.movies.find_one({"_id": heat.id}))["rating"]
    assert summary["count"] == 3 and summary["sum"] == 10.0
    assert (await db.movies.find_one({"_id": toy.id}))["rating"]["count"] == 2
    users = db.users.find({}, {"stats.count": 1})
    counts = {u["_id"]: u["stats"]["count"] async for u in users}
    assert counts == {u1.id: 2, u2.id: 2, u3.id: 1}
    assert await db.summary_intents.count_documents({}) == 0
    # The merged records' ratings carry the drain mark like any write.
    assert await summaries.undrained() >= 2

    assert (await dedupe(dry_run=False, prior_votes=10)).merges == []


async def test_a_kept_record_takes_the_others_ids_and_names(client, db):
    kept = await _movie("Seven", 1995)
    await _rate(kept, (await User(username="a", display_name="A").insert()), 4.0)
    other = await _movie("Se7en", 1995, imdb="tt0114369")
    other.title_key = kept.title_key  # matched on title and year: one of them has no id
    await other.save()
    await dedupe(dry_run=False, prior_votes=10)
    doc = await db.movies.find_one({"_id": kept.id})
    assert doc["external_ids"]["imdb"] == "tt0114369" and doc["aliases"] == ["Se7en"]
    assert doc["search_names"] == ["seven", "se7en"] and "=se7en" in doc["search_terms"]
    assert await db.movies.count_documents({}) == 1
