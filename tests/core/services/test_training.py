"""When a model is due: none yet, an import that changed ratings, enough new likes through
the API; never for an unchanged re-import or a fresh model. And what a trained model serves."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId

from core.imports.release import MovieLensRelease
from core.imports.source import Source
from core.imports.writer import MovieLensImport
from core.services import recommendations, training
from core.store import ratings as rating_store
from core.store import summaries as summary_store
from core.store.leases import IMPORT_LEASE, FencedLease
from tests.seed.releases import RATINGS, write_release


async def _import(path: Any) -> Any:
    source = MovieLensRelease(Source(path))
    try:
        return await MovieLensImport(source, batch_size=2).run()
    finally:
        source.close()


async def test_a_model_is_due_after_changes_and_only_then(odm, settings, tmp_path):
    settings = settings.model_copy(update={"recommender_new_likes": 2, "similar_min_likes": 1})
    assert await training.due(settings=settings) == "no model"
    folder = write_release(tmp_path / "v1")
    await _import(folder)
    why, model = await training.train_if_due(settings=settings, op_budget=30)
    assert why == "no model" and model is not None and model.likes == 3
    assert await training.due(settings=settings) is None
    assert await training.train_if_due(settings=settings, op_budget=30) == (None, None)

    report = await _import(folder)  # the same release again: nothing changed
    assert report.ratings.unchanged == len(RATINGS)
    assert await training.due(settings=settings) is None

    changed = [(u, m, "4.5" if (u, m) == (2, 1) else s, t) for u, m, s, t in RATINGS]
    report = await _import(write_release(tmp_path / "v2", ratings=changed))
    assert report.ratings.updated == 1
    async with FencedLease(IMPORT_LEASE, holder="cli:test", ttl=30).held():
        assert await training.due(settings=settings) is None  # not while an import writes
    assert await training.due(settings=settings) == "ratings imported"
    why, model = await training.train_if_due(settings=settings, op_budget=30)
    assert why == "ratings imported" and model is not None and model.likes == 4
    assert await training.due(settings=settings) is None

    # Likes through the API count from the newest model's mark; one is not enough here.
    user, movies = ObjectId(), [ObjectId(), ObjectId()]
    now = await summary_store.server_now()
    await rating_store.upsert_score(user, movies[0], 5.0, now=now)
    await rating_store.upsert_score(user, movies[1], 1.0, now=now)  # a dislike: not counted
    assert await training.due(settings=settings) is None
    # One new like, and the model older than RECOMMENDER_MAX_AGE (30 s here): due too.
    older = settings.model_copy(update={"recommender_max_age": 30.0})
    assert await training.due(settings=older) is None
    past = (await summary_store.server_now()) - timedelta(seconds=31)
    await odm.recommender_models.update_many({}, {"$set": {"data_mark": past}})
    await odm.recommender_state.update_one(
        {"_id": "ratings"}, {"$set": {"imported_at": past - timedelta(seconds=1)}}
    )
    assert (await training.due(settings=older)).startswith("new likes, and the newest model")
    await rating_store.upsert_score(user, movies[1], 4.0, now=now)
    assert await training.due(settings=settings) == "2 or more new likes"
    # Asked outright, it trains whatever is due.
    assert (await training.train_if_due(settings=settings, op_budget=30, force=True))[0] == "asked"


async def test_a_trained_model_lists_similar_films_with_a_reason(odm, settings, tmp_path):
    settings = settings.model_copy(update={"similar_min_likes": 1})
    likes = [(u, m, "5.0", 964982703 + u) for u in range(1, 9) for m in (1, 2, 4)]
    await _import(write_release(tmp_path / "rel", ratings=likes))
    await training.train(settings=settings, op_budget=30)
    toy = await odm.movies.find_one({"external_ids.movielens": 1})
    found = await recommendations.similar_movies(
        movie_id=toy["_id"], limit=5, store=recommendations.ModelStore(check_every=0)
    )
    assert [s.movie["title"] for s in found.items] and found.model is not None
    assert {s.reason for s in found.items} == {"8 of the 8 people who like Toy Story like it too"}
