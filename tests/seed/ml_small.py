"""Imports ml-latest-small twice into a SecantusDB of its own and writes what the test checks
as JSON: `python -m tests.seed.ml_small WORKDIR`.

The import takes minutes on the embedded server, nearly all of it inside that server's
process, so the suite starts this at collection (tests/seed/conftest.py) and the test reads
the result at its turn: the import overlaps the rest of the suite instead of adding to it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from core import processes, store
from core.imports.release import MovieLensRelease
from core.imports.source import Source
from core.imports.writer import MovieLensImport
from core.services import movies, recommendations, training
from core.settings import Settings
from core.store import movies as movie_store
from embedded import stack as embedded
from tests.services import database_env

ROOT = Path(__file__).resolve().parents[2]
RESULT = "result.json"
# Titles as people type them (the way they write them, not misspelt), each with the
# MovieLens id of the film it must find among the first three results.
SEARCHES = [
    ("the matrix", 2571), ("matrix", 2571), ("amelie", 4973), ("se7en", 47), ("seven", 47),
    ("schindlers list", 527), ("schindler's list", 527), ("star wars empire strikes back", 1196),
    ("empire strikes back", 1196), ("incep", 79132), ("the godfather", 858),
    ("godfather part ii", 1221), ("godfather 2", 1221), ("shawshank", 318),
    ("pulp fiction", 296), ("forrest gump", 356), ("lord of the rings fellowship", 4993),
    ("return of the king", 7153), ("fight club", 2959), ("toy story", 1), ("toy story 2", 3114),
    ("back to the future", 1270), ("silence of the lambs", 593), ("jurassic park", 480),
    ("terminator 2", 589), ("wall-e", 60069), ("walle", 60069), ("e.t.", 1097),
    ("the dark knight", 58559), ("usual suspects", 50), ("spirited away", 5618),
    ("leon the professional", 293), ("city of god", 6016), ("life is beautiful", 2324),
    ("crouching tiger", 3996), ("pans labyrinth", 48394), ("harry potter sorcerer", 4896),
    ("monsters inc", 4886), ("good will hunting", 1704), ("fabuleux destin", 4973),
]  # fmt: skip
# The films whose similar lists the recommendations promise to keep believable.
SIMILAR_TO = {1: "Toy Story", 2571: "The Matrix", 4993: "Fellowship", 296: "Pulp Fiction",
              4973: "Amélie"}  # fmt: skip
HOW_TO_GET = (
    "ml-latest-small not found: set MOVIELENS_SMALL to its folder or .zip, or run "
    "`.venv/bin/python -m seed download ml-latest-small` (checksum-verified, cached)"
)


def find_ml_small() -> Path | None:
    """ml-latest-small: MOVIELENS_SMALL, else the shared copy beside the project, else the
    downloader's cache (where `python -m seed download` and CI put it)."""
    if os.environ.get("MOVIELENS_SMALL"):
        given = Path(os.environ["MOVIELENS_SMALL"])
        return given if given.exists() else None
    cache = Path(os.environ.get("MOVIELENS_CACHE", Path.home() / ".cache" / "movie-ratings"))
    for candidate in (
        ROOT.parent / "shared" / "movielens" / "ml-latest-small",
        cache / "ml-latest-small.zip",
    ):
        if candidate.exists():
            return candidate
    return None


async def _import(path: Path) -> dict[str, Any]:
    release = MovieLensRelease(Source(path))
    try:
        return (await MovieLensImport(release, batch_size=5000).run()).model_dump()
    finally:
        release.close()


async def _searches() -> dict[str, list[int | None]]:
    """The MovieLens ids of the first three results of each search, as GET /movies gives."""
    found = {}
    for q, _ in SEARCHES:
        page = await movies.list_movies(query=movies.MovieQuery(q=q), limit=3)
        found[q] = [movie["external_ids"].get("movielens") for movie in page.items]
    return found


async def _similar(settings: Settings) -> dict[str, Any]:
    """A model trained as the worker trains it, and the top 10 similar to each SIMILAR_TO
    film: MovieLens id, title and how many like it."""
    await training.train(settings=settings, op_budget=120)
    store = recommendations.ModelStore(check_every=0)
    model = await store.current()
    assert model is not None
    lists = {}
    films = await movie_store.by_movielens_ids(list(SIMILAR_TO), {"external_ids.movielens": 1})
    for movielens_id, film in films.items():
        found = await recommendations.similar_movies(movie_id=film["_id"], limit=10, store=store)
        lists[str(movielens_id)] = [
            {
                "title": s.movie["title"],
                "year": s.movie["year"],
                "likes": int(model.model.likes[model.index[s.movie["id"]]]),
                "reason": s.reason,
            }
            for s in found.items
        ]
    return lists


async def run(work: Path, path: Path) -> dict[str, Any]:
    port = processes.free_port()
    proc = embedded.start_secantus(
        storage=str(work / "db"), port=port, log_file=work / "secantus.log", env=database_env()
    )
    client: AsyncMongoClient = AsyncMongoClient(
        f"mongodb://127.0.0.1:{port}", tz_aware=True, socketTimeoutMS=120_000
    )
    settings = Settings(
        environment="test",
        mongodb_url=f"mongodb://127.0.0.1:{port}",
        mongodb_db="movielens",
        redis_url="redis://127.0.0.1:1/0",  # required by the type; this harness uses none
    )
    try:
        db = client["movielens"]
        await store.bind(db)
        first = await _import(path)
        toy = await db.movies.find_one({"external_ids.movielens": 1})
        assert toy is not None, "Toy Story (MovieLens id 1) was not imported"
        counts = {
            name: await db[name].count_documents({}) for name in ("movies", "users", "ratings")
        }
        return {
            "first": first,
            "counts": counts,
            "toy": {k: toy["rating"][k] for k in ("count", "mean", "histogram")},
            "left": {
                "marked": await db.ratings.count_documents({"changed_at": {"$exists": True}}),
                "intents": await db.summary_intents.count_documents({}),
            },
            "searches": await _searches(),
            "similar": await _similar(settings),
            "due_after_training": await training.due(settings=settings),
            "again": await _import(path),
            "due_after_unchanged_import": await training.due(settings=settings),
        }
    finally:
        await client.close()
        processes.stop([proc])


def main() -> int:
    work = Path(sys.argv[1])
    path = find_ml_small()
    if path is None:
        (work / RESULT).write_text(json.dumps({"error": HOW_TO_GET}))
        return 1
    result = asyncio.run(run(work, path))
    (work / RESULT).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
