"""Operator clients: scripts that authenticate with client_credentials (RFC 6749 §4.4)."""

from __future__ import annotations

from datetime import datetime

from beanie import Document
from pydantic import Field

from models.common import utcnow


class ApiClient(Document):
    """A registered client; its secret is kept only as a SHA-256 digest (it is 256 random
    bits, so a slow password hash would add nothing but latency)."""

    client_id: str
    name: str
    secret_hash: str
    scopes: list[str]
    created_at: datetime = Field(default_factory=utcnow)
    revoked_at: datetime | None = None

    class Settings:
        name = "clients"
