"""One user's score for one movie."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId
from pymongo import ASCENDING, DESCENDING, IndexModel


class Rating(Document):
    """`pending` (not a model field: absent unless set) is a fresh ObjectId each write stamps
    in the same update, the durable intent to recompute this movie and user; the drain
    unsets it once both are recomputed, unless a newer write changed it meanwhile."""

    movie_id: PydanticObjectId
    user_id: PydanticObjectId
    score: float
    rated_at: datetime
    updated_at: datetime

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
            # Sparse: holds only the stamped ratings, so the drain's scan is as small as its
            # backlog (explain: IXSCAN on both servers).
            IndexModel([("pending", ASCENDING)], name="pending_summaries", sparse=True),
        ]
