"""The users collection and the retired usernames kept from new accounts."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from beanie import PydanticObjectId
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError

from core.store import by_movielens_id
from core.store.errors import duplicate
from models import RetiredUsername, User

# The indexes of User documents (built at start: core.store.indexes).
INDEXES: list[IndexModel] = [
    IndexModel([("username", ASCENDING)], unique=True, name="username_unique"),
    IndexModel(
        [("email", ASCENDING)],
        unique=True,
        name="email_unique",
        partialFilterExpression={"email": {"$type": "string"}},
    ),
    IndexModel(
        [("external_ids.movielens", ASCENDING)],
        unique=True,
        name="movielens_id",
        partialFilterExpression={"external_ids.movielens": {"$type": "number"}},
    ),
    # Lookups by MovieLens id (imports): a plain compound index, which every server
    # uses for $in; not every server proves an $in of numbers matches the partial one.
    IndexModel(
        [("external_ids.movielens", ASCENDING), ("_id", ASCENDING)],
        name="movielens_lookup",
    ),
]

# The indexes of RetiredUsername documents (built at start: core.store.indexes).
RETIRED_INDEXES: list[IndexModel] = [
    IndexModel([("until", ASCENDING)], name="expiry", expireAfterSeconds=0)
]


async def get(user_id: PydanticObjectId) -> User | None:
    """One user by id."""
    return await User.get(user_id)


async def by_username(username: str) -> User | None:
    """One user by (normalised) username."""
    return await User.find_one({"username": username})


async def exists(user_id: PydanticObjectId) -> bool:
    """Whether the user is there (an _id-only read)."""
    return await User.get_pymongo_collection().find_one({"_id": user_id}, {"_id": 1}) is not None


async def insert(user: User) -> User:
    """Store a new user; Duplicate names the username or email index it collided with."""
    try:
        await user.insert()
    except DuplicateKeyError as exc:
        raise duplicate(exc) from None
    return user


async def set_fields(user_id: PydanticObjectId, changes: dict[str, Any]) -> None:
    """Set fields of one user; Duplicate when the email or username is another's."""
    try:
        await User.get_pymongo_collection().update_one({"_id": user_id}, {"$set": changes})
    except DuplicateKeyError as exc:
        raise duplicate(exc) from None


async def delete(user_id: PydanticObjectId) -> bool:
    """Remove a user; False when there was none."""
    result = await User.get_pymongo_collection().delete_one({"_id": user_id})
    return result.deleted_count > 0


async def is_retired(username: str) -> bool:
    """Whether a deleted account's username is still kept from new accounts."""
    return await RetiredUsername.get(username) is not None


async def retire(username: str, *, until: datetime) -> None:
    """Keep a deleted account's username from new accounts until `until`."""
    await RetiredUsername.get_pymongo_collection().update_one(
        {"_id": username}, {"$set": {"until": until}}, upsert=True
    )


async def count() -> int:
    """How many users there are (the collection's estimate: no scan)."""
    return await User.get_pymongo_collection().estimated_document_count()


async def ids_by_movielens(movielens_ids: list[int]) -> dict[int, PydanticObjectId]:
    """The imported users with these MovieLens ids, by MovieLens id."""
    return await by_movielens_id.ids_of(User, movielens_ids)


async def insert_imported(docs: dict[int, dict[str, Any]]) -> dict[int, Any]:
    """Store imported users by MovieLens id; the ids the database holds for them.
    Duplicate when a username they need belongs to another account."""
    return await by_movielens_id.insert_new(User, docs)
