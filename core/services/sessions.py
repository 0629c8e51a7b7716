"""Login sessions: a refresh token family per login, and ending them (a revoked family is
marked, so a token rotated from it later is refused too)."""

from __future__ import annotations

from datetime import timedelta

from beanie import PydanticObjectId

from models import RefreshToken, RevokedFamily, utcnow


async def revoke_families(
    *, user_id: PydanticObjectId, family_ids: list[str], refresh_ttl: int
) -> None:
    """Revoke every refresh token descended from these logins, and any still to be rotated
    from them: the family itself is marked, for at least as long as its tokens could live."""
    if not family_ids:
        return
    now = utcnow()
    marks = RevokedFamily.get_motor_collection()
    for family_id in family_ids:
        await marks.update_one(
            {"_id": family_id},
            {
                "$setOnInsert": {"user_id": user_id, "revoked_at": now},
                "$max": {"expires_at": now + timedelta(seconds=2 * refresh_ttl)},
            },
            upsert=True,
        )
    await RefreshToken.get_motor_collection().update_many(
        {"family_id": {"$in": family_ids}, "revoked_at": None}, {"$set": {"revoked_at": now}}
    )


async def revoke_other_sessions(
    *, user_id: PydanticObjectId, keep: str | None, refresh_ttl: int
) -> int:
    """End every login of this user but `keep` (after a password or email change, the one
    making it; None ends all: disabling, demoting). Returns how many were ended."""
    live = {"user_id": user_id, "revoked_at": None, "expires_at": {"$gt": utcnow()}}
    families = await RefreshToken.get_motor_collection().distinct("family_id", live)
    ended = [f for f in families if f != keep]
    await revoke_families(user_id=user_id, family_ids=ended, refresh_ttl=refresh_ttl)
    return len(ended)
