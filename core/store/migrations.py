"""Versioned one-off changes to stored data, run once per database at deploy
(`python -m api migrate`; `make run` runs it at start), never by the API or the workers.
Each step is idempotent, so a deploy that died halfway runs it again."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymongo.errors import OperationFailure

from core.store.ratings import MARK_CHANGED
from models import Movie, Rating, utcnow

APPLIED = "migrations"  # the collection recording each applied version


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    apply: Callable[[], Awaitable[int]]  # how many documents or indexes it changed


# Ratings stamped by an earlier scheme (`pending`, cleared one by one, with its own index)
# join the drain's: they get `changed_at`, and the old index goes.
PENDING_INDEX = "pending_summaries"


async def _adopt_pending_stamps() -> int:
    ratings = Rating.get_pymongo_collection()
    if PENDING_INDEX not in await ratings.index_information():
        return 0
    moved = await ratings.update_many(
        {"pending": {"$exists": True}}, {"$unset": {"pending": ""}, **MARK_CHANGED}
    )
    await ratings.drop_index(PENDING_INDEX)
    return moved.modified_count


# genre_weighted ended in the score, not _id: a genre's page sorted every tie in memory. Its
# replacement (genre_weighted_id) is built with the others; the old one only costs writes.
RETIRED_INDEXES = {Movie: ["genre_weighted"]}


async def _drop_retired_indexes() -> int:
    dropped = 0
    for document, names in RETIRED_INDEXES.items():
        collection = document.get_pymongo_collection()
        present = {index["name"] async for index in await collection.list_indexes()}
        for name in names:
            if name in present:
                with contextlib.suppress(OperationFailure):  # another process dropped it
                    await collection.drop_index(name)
                    dropped += 1
    return dropped


MIGRATIONS = (
    Migration(1, "ratings stamped by the pending scheme join the drain", _adopt_pending_stamps),
    Migration(2, "drop the retired genre_weighted index", _drop_retired_indexes),
)


@dataclass(frozen=True, slots=True)
class Applied:
    version: int
    name: str
    changed: int


def _applied() -> Any:
    return Rating.get_pymongo_collection().database[APPLIED]


async def pending() -> list[Migration]:
    """The migrations this database has not had yet, in order."""
    done = {doc["_id"] async for doc in _applied().find({}, {"_id": 1})}
    return [m for m in MIGRATIONS if m.version not in done]


async def migrate() -> list[Applied]:
    """Apply every pending migration in order, recording each once it is done."""
    applied = []
    for migration in await pending():
        changed = await migration.apply()
        await _applied().update_one(
            {"_id": migration.version},
            {"$set": {"name": migration.name, "applied_at": utcnow(), "changed": changed}},
            upsert=True,
        )
        applied.append(Applied(migration.version, migration.name, changed))
    return applied
