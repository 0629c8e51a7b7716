"""User accounts, local or imported, with their embedded rating stats."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from beanie import Document
from pydantic import Field

from models.common import RatingStats, utcnow

Role = Literal["user", "admin"]


class User(Document):
    username: str
    email: str | None = None
    display_name: str
    password_hash: str | None = None  # None: cannot log in locally (imported, OIDC-only)
    role: Role = "user"
    external_ids: dict[str, str | int] = Field(default_factory=dict)
    stats: RatingStats = Field(default_factory=RatingStats)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    disabled_at: datetime | None = None  # set by an admin: no login, no refresh, no /me

    class Settings:
        name = "users"


class RetiredUsername(Document):
    """A deleted account's username, kept from new accounts until `until`: links, mentions
    and exports naming it keep meaning the person who left."""

    id: str  # type: ignore[assignment]
    until: datetime

    class Settings:
        name = "retired_usernames"
