"""Login sessions: a refresh token family per login, and ending them (a revoked family is
marked, so a token rotated from it later is refused too)."""

from __future__ import annotations

from datetime import timedelta

from core.store import tokens as token_store
from models import PydanticObjectId, utcnow


async def revoke_families(
    *, user_id: PydanticObjectId, family_ids: list[str], refresh_ttl: int
) -> None:
    """Revoke every refresh token descended from these logins, and any still to be rotated
    from them: the family itself is marked, for at least as long as its tokens could live."""
    if not family_ids:
        return
    await token_store.revoke_families(
        user_id, family_ids, now=utcnow(), keep_for=timedelta(seconds=2 * refresh_ttl)
    )


async def revoke_other_sessions(
    *, user_id: PydanticObjectId, keep: str | None, refresh_ttl: int
) -> int:
    """End every login of this user but `keep` (after a password or email change, the one
    making it; None ends all: disabling, demoting). Returns how many were ended."""
    families = await token_store.live_families(user_id, now=utcnow())
    ended = [f for f in families if f != keep]
    await revoke_families(user_id=user_id, family_ids=ended, refresh_ttl=refresh_ttl)
    return len(ended)
