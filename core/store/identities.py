"""The identities collection: (provider, subject) pairs linked to users."""

from __future__ import annotations

from beanie import PydanticObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from core.store.errors import duplicate
from models import Identity

# The indexes of Identity documents (built at start: core.store.indexes).
INDEXES: list[IndexModel] = [IndexModel([("user_id", ASCENDING)], name="user")]


async def get(key: str) -> Identity | None:
    """The identity with this (provider, subject) key."""
    return await Identity.get(key)


async def of_user(user_id: PydanticObjectId) -> list[Identity]:
    """A user's identities, oldest first."""
    return await Identity.find({"user_id": user_id}).sort("created_at").to_list()


async def insert(identity: Identity) -> Identity:
    """Store a new link; Duplicate when the pair is linked already."""
    try:
        await identity.insert()
    except DuplicateKeyError as exc:
        raise duplicate(exc) from None
    return identity


async def delete(keys: list[str], *, user_id: PydanticObjectId) -> None:
    """Remove these links of one user."""
    await Identity.get_pymongo_collection().delete_many({"_id": {"$in": keys}, "user_id": user_id})


async def delete_key(key: str) -> None:
    """Remove one link, whoever holds it."""
    await Identity.get_pymongo_collection().delete_one({"_id": key})


async def delete_of_user(user_id: PydanticObjectId) -> None:
    """Remove every link of one user."""
    await Identity.get_pymongo_collection().delete_many({"user_id": user_id})
