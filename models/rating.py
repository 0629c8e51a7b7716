"""One user's score for one movie."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel


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
        indexes = [
            IndexModel(
                [("user_id", ASCENDING), ("movie_id", ASCENDING)],
                unique=True,
                name="one_rating_per_user_and_movie",
            ),
            IndexModel(
                [("user_id", ASCENDING), ("rated_at", DESCENDING), ("_id", DESCENDING)],
                name="profile_recent",
            ),
            IndexModel(
                [("user_id", ASCENDING), ("score", DESCENDING), ("_id", DESCENDING)],
                name="profile_score",
            ),
            IndexModel(
                [("movie_id", ASCENDING), ("rated_at", DESCENDING), ("_id", DESCENDING)],
                name="movie_recent",
            ),
            # Sparse: holds only the ratings written through the API; the drain's range scan
            # from its mark reads just its backlog (explain: IXSCAN on both servers).
            IndexModel([("changed_at", ASCENDING)], name="drain_order", sparse=True),
        ]
