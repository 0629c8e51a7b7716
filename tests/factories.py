"""Documents built for tests, with the defaults a test does not care about."""

from __future__ import annotations

from beanie import PydanticObjectId

from models import Rating, utcnow


def rating(*, movie_id: PydanticObjectId, user_id: PydanticObjectId, score: float) -> Rating:
    """A rating made now."""
    now = utcnow()
    return Rating(movie_id=movie_id, user_id=user_id, score=score, rated_at=now, updated_at=now)
