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

from beanie import init_beanie
from motor.motor_asyncio import AsyncIOMotorClient

from core import processes
from core.services.movielens import MovieLensImport
from embedded import stack as embedded
from models import DOCUMENT_MODELS
from seed.movielens import MovieLensRelease
from seed.source import Source
from tests.services import database_env

ROOT = Path(__file__).resolve().parents[2]
ML_SMALL = Path(os.environ.get("MOVIELENS_SMALL", ROOT.parent / "shared/movielens/ml-latest-small"))
RESULT = "result.json"


async def _import() -> dict[str, Any]:
    release = MovieLensRelease(Source(ML_SMALL))
    try:
        return (await MovieLensImport(release, batch_size=5000).run()).model_dump()
    finally:
        release.close()


async def run(work: Path) -> dict[str, Any]:
    port = processes.free_port()
    proc = embedded.start_secantus(
        storage=str(work / "db"), port=port, log_file=work / "secantus.log", env=database_env()
    )
    client: AsyncIOMotorClient = AsyncIOMotorClient(
        f"mongodb://127.0.0.1:{port}", tz_aware=True, socketTimeoutMS=120_000
    )
    try:
        db = client["movielens"]
        await init_beanie(database=db, document_models=DOCUMENT_MODELS)
        first = await _import()
        toy = await db.movies.find_one({"external_ids.movielens": 1})
        counts = {
            name: await db[name].count_documents({}) for name in ("movies", "users", "ratings")
        }
        return {
            "first": first,
            "counts": counts,
            "toy": {k: toy["rating"][k] for k in ("count", "mean", "histogram")},
            "left": {
                "pending": await db.ratings.count_documents({"pending": {"$exists": True}}),
                "intents": await db.summary_intents.count_documents({}),
            },
            "again": await _import(),
        }
    finally:
        client.close()
        processes.stop([proc])


def main() -> int:
    work = Path(sys.argv[1])
    if not ML_SMALL.is_dir():
        (work / RESULT).write_text(json.dumps({"error": f"ml-latest-small not at {ML_SMALL}"}))
        return 1
    result = asyncio.run(run(work))
    (work / RESULT).write_text(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
