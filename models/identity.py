"""Links from a third-party identity (provider, subject) to one of our users."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId
from pydantic import Field

from models.common import utcnow


class Identity(Document):
    """`_id` is "<provider>|<sub>": one identity links to at most one user, by construction."""

    id: str  # type: ignore[assignment]
    provider: str
    subject: str
    user_id: PydanticObjectId
    created_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "identities"

    @staticmethod
    def key(provider: str, subject: str) -> str:
        return f"{provider}|{subject}"
