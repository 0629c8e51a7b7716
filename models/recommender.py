"""Trained recommendation models: each version's item order and figures, and its factors."""

from __future__ import annotations

from datetime import datetime

from beanie import Document, PydanticObjectId
from pydantic import Field

from models.common import utcnow


class RecommenderModel(Document):
    """One trained model. `ready` is set once every chunk of its arrays is stored: readers
    take the newest ready version, so a training that dies midway is never read."""

    version: int
    format: int  # the layout of the stored arrays
    items: list[PydanticObjectId]  # the movie of each row
    params: dict[str, float]  # what it was trained and is scored with
    likes: int  # the ratings of 4.0 or more it learnt from
    users: int
    seconds: float  # reading plus training
    # The database's clock just before the likes were read: what came after is news.
    data_mark: datetime | None = None
    ready: bool = False
    trained_at: datetime = Field(default_factory=utcnow)

    class Settings:
        name = "recommender_models"


class RecommenderChunk(Document):
    """A slice of a model's stored arrays (core.recommend.dump), under the document size limit."""

    version: int
    n: int
    data: bytes

    class Settings:
        name = "recommender_chunks"
