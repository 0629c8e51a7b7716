"""One user's score for one movie."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId


class Rating(Document):
    """`changed_at` is the database server's clock at each API write, set by the same
    update: the durable intent to recompute this movie and user (absent on imported ratings,
    whose import job recomputes them). The drain takes the writes between its mark and a
    moment just past, in that server's clock; a write is never cleared, the mark moves past
    it."""

    movie_id: PydanticObjectId
    user_id: PydanticObjectId
    score: float
    rated_at: datetime
    updated_at: datetime
    changed_at: datetime | None = None

    class Settings:
        name = "ratings"
