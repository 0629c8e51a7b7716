"""Refresh tokens, revoked login families and operator clients."""

from __future__ import annotations

from datetime import datetime, timedelta

from beanie import PydanticObjectId
from pymongo import ASCENDING, IndexModel

from models import ApiClient, RefreshToken, RevokedFamily

# The indexes of ApiClient documents (built at start: core.store.indexes).
CLIENT_INDEXES: list[IndexModel] = [
    IndexModel([("client_id", ASCENDING)], unique=True, name="client_id_unique")
]

# The indexes of RefreshToken documents (built at start: core.store.indexes).
REFRESH_INDEXES: list[IndexModel] = [
    IndexModel([("token_hash", ASCENDING)], unique=True, name="token_hash_unique"),
    IndexModel([("family_id", ASCENDING)], name="family"),
    IndexModel([("user_id", ASCENDING)], name="user"),
    IndexModel([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=0),
]

# The indexes of RevokedFamily documents (built at start: core.store.indexes).
REVOKED_INDEXES: list[IndexModel] = [
    IndexModel([("expires_at", ASCENDING)], name="expiry", expireAfterSeconds=0)
]


async def insert_refresh(token: RefreshToken) -> None:
    """Store a new refresh token."""
    await token.insert()


async def refresh_by_digest(token_hash: str) -> RefreshToken | None:
    """The refresh token with this digest."""
    return await RefreshToken.find_one({"token_hash": token_hash})


async def family_revoked(family_id: str) -> bool:
    """Whether this login family was revoked."""
    found = await RevokedFamily.get_pymongo_collection().find_one({"_id": family_id}, {"_id": 1})
    return found is not None


async def claim_refresh(token_id: PydanticObjectId, *, now: datetime) -> bool:
    """Mark a live, unused token used; False when another request did or it was revoked.
    An update, not findAndModify, on every server: the answer needs nothing of the token."""
    claimed = await RefreshToken.get_pymongo_collection().update_one(
        {"_id": token_id, "used_at": None, "revoked_at": None}, {"$set": {"used_at": now}}
    )
    return claimed.modified_count > 0


async def live_families(user_id: PydanticObjectId, *, now: datetime) -> list[str]:
    """The families of a user's refresh tokens still usable at `now`."""
    live = {"user_id": user_id, "revoked_at": None, "expires_at": {"$gt": now}}
    return list(await RefreshToken.get_pymongo_collection().distinct("family_id", live))


async def revoke_families(
    user_id: PydanticObjectId, family_ids: list[str], *, now: datetime, keep_for: timedelta
) -> None:
    """Mark the families revoked (for at least `keep_for`) and revoke their tokens."""
    marks = RevokedFamily.get_pymongo_collection()
    for family_id in family_ids:
        await marks.update_one(
            {"_id": family_id},
            {
                "$setOnInsert": {"user_id": user_id, "revoked_at": now},
                "$max": {"expires_at": now + keep_for},
            },
            upsert=True,
        )
    await RefreshToken.get_pymongo_collection().update_many(
        {"family_id": {"$in": family_ids}, "revoked_at": None}, {"$set": {"revoked_at": now}}
    )


async def delete_of_user(user_id: PydanticObjectId) -> None:
    """Remove every refresh token of one user."""
    await RefreshToken.get_pymongo_collection().delete_many({"user_id": user_id})


async def insert_client(client: ApiClient) -> None:
    """Register an operator client."""
    await client.insert()


async def clients() -> list[ApiClient]:
    """Every operator client, oldest first."""
    return await ApiClient.find_all().sort("created_at").to_list()


async def client(client_id: str) -> ApiClient | None:
    """One operator client by its public id."""
    return await ApiClient.find_one({"client_id": client_id})


async def client_live(client_id: str) -> bool:
    """Whether the client exists and is not revoked (read on every request it makes)."""
    found = await ApiClient.get_pymongo_collection().find_one(
        {"client_id": client_id}, {"revoked_at": 1}
    )
    return found is not None and found.get("revoked_at") is None


async def revoke_client(client_id: str, *, now: datetime) -> None:
    """Revoke a client that is not revoked yet."""
    await ApiClient.get_pymongo_collection().update_one(
        {"client_id": client_id, "revoked_at": None}, {"$set": {"revoked_at": now}}
    )
