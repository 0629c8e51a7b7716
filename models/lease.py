"""Leases: which process may do a piece of work that must never run twice at once."""

from __future__ import annotations

from datetime import datetime

from beanie import Document


class Lease(Document):
    """Held by `holder` until `expires_at` unless renewed. `fence` grows by one with every
    grant, so a holder that stalled past its expiry finds it lost and stops."""

    id: str  # type: ignore[assignment]  # what the lease guards, e.g. "import:movielens"
    holder: str
    fence: int = 1
    expires_at: datetime

    class Settings:
        name = "leases"
