"""Documents built for tests, with the defaults a test does not care about."""

from __future__ import annotations

from beanie import PydanticObjectId
from bson import ObjectId

from models import Rating, User, utcnow


def rating(*, movie_id: PydanticObjectId, user_id: PydanticObjectId, score: float) -> Rating:
    """A rating made now."""
    now = utcnow()
    return Rating(movie_id=movie_id, user_id=user_id, score=score, rated_at=now, updated_at=now)


def user(name: str | None = None) -> User:
    """A user with no password (an imported one, say), not yet stored."""
    name = name or f"u-{ObjectId()}"
    return User(username=name, display_name=name)
