"""Stored documents (Beanie). Every collection the system owns is listed in DOCUMENT_MODELS."""

from beanie import PydanticObjectId

from models.backlog import DrainMark, SummaryIntent
from models.client import ApiClient
from models.common import SCORES, RatingStats, bucket, parse_id, utcnow
from models.identity import Identity
from models.import_job import FINISHED, ImportJob, ImportReport
from models.lease import Lease
from models.movie import ExternalIds, GlobalRatingStats, Movie, RatingSummary, title_key
from models.rating import Rating
from models.recommender import RecommenderChunk, RecommenderModel
from models.token import RefreshToken, RevokedFamily
from models.user import RetiredUsername, User

DOCUMENT_MODELS: list[type] = [
    User,
    RetiredUsername,
    Movie,
    Rating,
    RefreshToken,
    RevokedFamily,
    GlobalRatingStats,
    ImportJob,
    SummaryIntent,
    DrainMark,
    ApiClient,
    Identity,
    RecommenderModel,
    RecommenderChunk,
    Lease,
]

__all__ = [
    "DOCUMENT_MODELS",
    "FINISHED",
    "SCORES",
    "ApiClient",
    "DrainMark",
    "ExternalIds",
    "GlobalRatingStats",
    "Identity",
    "ImportJob",
    "ImportReport",
    "Lease",
    "Movie",
    "PydanticObjectId",
    "Rating",
    "RatingStats",
    "RatingSummary",
    "RecommenderChunk",
    "RecommenderModel",
    "RefreshToken",
    "RetiredUsername",
    "RevokedFamily",
    "SummaryIntent",
    "User",
    "bucket",
    "parse_id",
    "title_key",
    "utcnow",
]
