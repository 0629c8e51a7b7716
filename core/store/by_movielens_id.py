"""Documents new to the catalogue stored as upserts on their MovieLens id (movies and the
users an import brings): one someone stored first is kept, not doubled."""

from __future__ import annotations

from typing import Any

from beanie import Document, PydanticObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from core.store.errors import Duplicate
from core.store.paging import chunked

KEY = "external_ids.movielens"


async def insert_new(document: type[Document], docs: dict[int, dict[str, Any]]) -> dict[int, Any]:
    """Store `docs` (by MovieLens id) that are not there yet and return the ids the
    database holds for all of them: no id is used that the database did not store.
    Duplicate when another unique index (a username) refuses one."""
    if not docs:
        return {}
    collection = document.get_pymongo_collection()

    def fields(doc: dict[str, Any]) -> dict[str, Any]:
        # The filter seeds external_ids.movielens; the other ids go in as dotted paths.
        rest = {k: v for k, v in doc.items() if k != "external_ids"}
        others = doc.get("external_ids") or {}
        rest.update({f"external_ids.{k}": v for k, v in others.items() if k != "movielens"})
        return rest

    try:
        await collection.bulk_write(
            [UpdateOne({KEY: mlid}, {"$setOnInsert": fields(doc)}, upsert=True)
             for mlid, doc in docs.items()],
            ordered=False,
        )  # fmt: skip
    except BulkWriteError as exc:
        taken = [e for e in exc.details.get("writeErrors", []) if e.get("code") == 11000]
        if not taken:
            raise
        pattern = taken[0].get("keyPattern") or {}
        raise Duplicate(next(iter(pattern), taken[0].get("errmsg"))) from None
    stored = await ids_of(document, list(docs))
    if len(stored) != len(docs):
        raise RuntimeError(f"{len(docs) - len(stored)} upserted documents cannot be read back")
    return stored


async def ids_of(document: type[Document], movielens_ids: list[int]) -> dict[int, PydanticObjectId]:
    """The ids of the documents with these MovieLens ids, by MovieLens id."""
    collection = document.get_pymongo_collection()
    found: dict[int, PydanticObjectId] = {}
    for part in chunked(movielens_ids):
        async for doc in collection.find({KEY: {"$in": part}}, {"_id": 1, KEY: 1}):
            found[doc["external_ids"]["movielens"]] = doc["_id"]
    return found
