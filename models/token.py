"""Refresh tokens: stored hashed, rotated on use, grouped in families for reuse detection."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId


class RefreshToken(Document):
    token_hash: str
    family_id: str
    user_id: PydanticObjectId
    scope: str
    expires_at: datetime
    created_at: datetime
    used_at: datetime | None = None
    revoked_at: datetime | None = None

    class Settings:
        name = "refresh_tokens"


class RevokedFamily(Document):
    """A refresh token family that no longer works: every refresh reads this, so a token
    rotated in the same instant as the revocation dies with its family too."""

    id: str  # type: ignore[assignment]  # the family id
    user_id: PydanticObjectId
    revoked_at: datetime
    expires_at: datetime  # after every token the family could still hold

    class Settings:
        name = "revoked_families"
