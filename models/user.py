"""User accounts, local or imported, with their embedded rating stats."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from beanie import Document
from pydantic import Field
from pymongo import ASCENDING, IndexModel

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
        indexes = [
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


class RetiredUsername(Document):
    """A deleted account's username, kept from new accounts until `until`: links, mentions
    and exports naming it keep meaning the person who left."""

    id: str  # type: ignore[assignment]
    until: datetime

    class Settings:
        name = "retired_usernames"
        indexes = [IndexModel([("until", ASCENDING)], name="expiry", expireAfterSeconds=0)]
