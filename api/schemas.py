"""Request and response schemas (marshmallow, for validation and the OpenAPI spec).

Documents in models/ are never bound to a request body: each body has its own schema, so a
client cannot set ids, roles, hashes or aggregates.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from marshmallow import INCLUDE, Schema, ValidationError, fields, validate, validates_schema

from core import names
from models import SCORES, PydanticObjectId, parse_id

PASSWORD = validate.Length(min=names.PASSWORD_MIN, max=names.PASSWORD_MAX)
PAGE_LIMIT = fields.Integer(
    load_default=20, validate=validate.Range(1, 100), metadata={"description": "Page size."}
)
OFFSET_MAX = 1_000  # deeper pages are reached by following `next` (a cursor)
PAGE_OFFSET = fields.Integer(
    load_default=0,
    validate=validate.Range(0, OFFSET_MAX),
    metadata={
        "description": "Items to skip, up to 1,000, for the first page read; then follow "
        "`next`, which carries a cursor. Not with `cursor`."
    },
)
PAGE_CURSOR = fields.String(
    validate=[validate.Length(1, 600), validate.Regexp(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")],
    metadata={
        "pattern": r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        "description": "Where the page starts: copied from the previous page's `next`. "
        "Opaque and signed; one issued for another list or altered is a 400.",
    },
)


class ObjectIdField(fields.Field):
    """A 24-hex-digit id: a string in JSON, an ObjectId inside."""

    default_error_messages = {"invalid": "Not a valid id."}

    def __init__(self, **kwargs: Any) -> None:
        # No example: Swagger UI would pre-fill it into "Try it out", and a made-up id is a
        # 404; the description says where a real one comes from.
        kwargs.setdefault("metadata", {}).update({"type": "string", "pattern": "^[0-9a-f]{24}$"})
        super().__init__(**kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else str(value)

    def _deserialize(
        self, value: Any, attr: str | None, data: Any, **kwargs: Any
    ) -> PydanticObjectId:
        parsed = parse_id(value)
        if parsed is None:
            raise self.make_error("invalid")
        return parsed


class UsernameField(fields.String):
    """NFKC first (the form uniqueness is checked in), then the whole string must match:
    "root" plus a newline, or in fullwidth letters, is not a new name."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = names.normalize_username(super()._deserialize(value, attr, data, **kwargs))
        if problem := names.username_problem(text):
            raise ValidationError(problem)
        return text


class DisplayNameField(fields.String):
    """Printable text of at most 64 characters after NFKC, the limit every source shares."""

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs)
        if problem := names.display_name_problem(text):
            raise ValidationError(problem)
        return names.normalize(text).strip()


class StrictNumber(fields.Float):
    """A JSON number: strings, booleans, NaN and infinities are refused."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self.make_error("invalid")
        if not math.isfinite(value):
            raise self.make_error("special")
        return float(value)


class HistogramField(fields.Field):
    """Ten buckets stored as a list, shown as {"0.5": n, …, "5.0": n}."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("metadata", {}).update(
            {
                "type": "object",
                "properties": {f"{s:.1f}": {"type": "integer"} for s in SCORES},
            }
        )
        super().__init__(**kwargs)

    def _serialize(self, value: Any, attr: str | None, obj: Any, **kwargs: Any) -> dict:
        return {f"{s:.1f}": n for s, n in zip(SCORES, value, strict=True)}


# ---- problems ---------------------------------------------------------------------------


class FieldErrorSchema(Schema):
    location = fields.String(metadata={"example": "json"})
    field = fields.String(metadata={"example": "score"})
    message = fields.String()


class ServedSchema(Schema):
    filters = fields.List(fields.String())
    sorts = fields.List(fields.String())


class ProblemSchema(Schema):
    """RFC 9457 problem details; `type` is the URL of a page about the problem, and a
    problem may carry further members (RFC 9457 §3.2)."""

    class Meta:
        unknown = INCLUDE  # documented as additionalProperties: extension members

    type = fields.String(metadata={"format": "uri"})
    title = fields.String()
    status = fields.Integer()
    detail = fields.String()
    instance = fields.String()
    request_id = fields.String()
    errors = fields.List(fields.Nested(FieldErrorSchema), metadata={"description": "422"})
    field = fields.String(metadata={"description": "409: the field whose value is taken"})
    existing = fields.String(metadata={"description": "409: the movie that has this id"})
    required_scope = fields.String(metadata={"description": "403: the scope the route needs"})
    checks = fields.Dict(
        keys=fields.String(), values=fields.String(), metadata={"description": "/ready"}
    )
    served = fields.List(
        fields.Nested(ServedSchema),
        metadata={"description": "422 on GET /movies: the filters served, each with its sorts"},
    )


# ---- users ------------------------------------------------------------------------------


class StatsSchema(Schema):
    count = fields.Integer()
    mean = fields.Float(allow_none=True)
    histogram = HistogramField()


class UserCreateSchema(Schema):
    username = UsernameField(
        required=True, metadata={"pattern": f"^{names.USERNAME_PATTERN.pattern}$"}
    )
    email = fields.Email(required=True, validate=validate.Length(max=names.EMAIL_MAX))
    display_name = DisplayNameField(
        required=True,
        metadata={"maxLength": names.DISPLAY_NAME_MAX, "pattern": names.DISPLAY_NAME_PATTERN},
    )
    password = fields.String(required=True, validate=PASSWORD, load_only=True)


class UserUpdateSchema(Schema):
    display_name = DisplayNameField(
        metadata={"maxLength": names.DISPLAY_NAME_MAX, "pattern": names.DISPLAY_NAME_PATTERN}
    )
    email = fields.Email(validate=validate.Length(max=names.EMAIL_MAX))
    password = fields.String(validate=PASSWORD)
    current_password = fields.String(validate=validate.Length(max=names.PASSWORD_MAX))

    @validates_schema
    def _not_empty(self, data: dict, **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one field to change.")


class UserPublicSchema(Schema):
    id = ObjectIdField()
    username = fields.String()
    display_name = fields.String()
    created_at = fields.DateTime()
    stats = fields.Nested(StatsSchema)


class UserPrivateSchema(UserPublicSchema):
    email = fields.String(allow_none=True)
    role = fields.String()


class UserIdPath(Schema):
    user_id = ObjectIdField(required=True)


class UserAdminSchema(UserPrivateSchema):
    disabled_at = fields.DateTime(allow_none=True)


class RoleSchema(Schema):
    role = fields.String(required=True, validate=validate.OneOf(["user", "admin"]))


class AccountDeleteSchema(Schema):
    current_password = fields.String(
        validate=validate.Length(max=names.PASSWORD_MAX),
        metadata={"description": "Required when the account has a password"},
    )


class ClientSchema(Schema):
    client_id = fields.String()
    name = fields.String()
    scopes = fields.List(fields.String())
    created_at = fields.DateTime()
    revoked_at = fields.DateTime(allow_none=True)


class ClientListSchema(Schema):
    items = fields.List(fields.Nested(ClientSchema))


class ClientIdPath(Schema):
    client_id = fields.String(required=True, validate=validate.Regexp(r"^mr_[0-9a-f]{16}$"))


class IdentitySchema(Schema):
    provider = fields.String(metadata={"example": "google"})
    linked_at = fields.DateTime(attribute="created_at")


class IdentityListSchema(Schema):
    items = fields.List(fields.Nested(IdentitySchema))


class ProviderPath(Schema):
    provider = fields.String(required=True, validate=validate.Length(1, 64))


class LinkCodeSchema(Schema):
    link_code = fields.String(
        metadata={"description": "One-time; give it to POST /auth/link/{provider}/complete"}
    )
    provider = fields.String()


class LinkCompleteSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(1, 200))


# ---- tokens -----------------------------------------------------------------------------


class TokenSchema(Schema):
    access_token = fields.String()
    token_type = fields.String(metadata={"example": "Bearer"})
    expires_in = fields.Integer()
    refresh_token = fields.String()
    scope = fields.String()


class OAuthErrorSchema(Schema):
    error = fields.String(metadata={"example": "invalid_grant"})
    error_description = fields.String()


# ---- movies -----------------------------------------------------------------------------


class ExternalIdsSchema(Schema):
    movielens = fields.Integer(allow_none=True, strict=True, validate=validate.Range(1, 2**31 - 1))
    imdb = fields.String(allow_none=True, validate=validate.Regexp(r"^(tt)?\d{1,10}$"))
    tmdb = fields.Integer(allow_none=True, strict=True, validate=validate.Range(1, 2**31 - 1))


class RatingSummarySchema(Schema):
    count = fields.Integer()
    mean = fields.Float(allow_none=True)
    histogram = HistogramField()
    weighted = fields.Float(allow_none=True)
    updated_at = fields.DateTime(allow_none=True)


GENRES = fields.List(
    fields.String(validate=validate.Length(1, 40)), validate=validate.Length(max=20)
)
YEAR = fields.Integer(allow_none=True, strict=True, validate=validate.Range(1870, 2100))


class MovieCreateSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(1, 300))
    year = YEAR
    genres = GENRES
    external_ids = fields.Nested(ExternalIdsSchema)


class MovieUpdateSchema(MovieCreateSchema):
    title = fields.String(validate=validate.Length(1, 300))

    @validates_schema
    def _not_empty(self, data: dict, **kwargs: Any) -> None:
        if not data:
            raise ValidationError("Give at least one field to change.")


class MoviePublicSchema(Schema):
    id = ObjectIdField()
    title = fields.String()
    aliases = fields.List(fields.String(), metadata={"description": "Other names of the film"})
    year = fields.Integer(allow_none=True)
    genres = fields.List(fields.String())
    external_ids = fields.Nested(ExternalIdsSchema)
    rating = fields.Nested(RatingSummarySchema)


_HISTOGRAM_KEYS = tuple(f"{s:.1f}" for s in SCORES)
_EXTERNAL_IDS = tuple(ExternalIdsSchema._declared_fields)
_NO_VOTES = (0,) * len(SCORES)


def movie_body(movie: Mapping[str, Any]) -> dict[str, Any]:
    """What `MoviePublicSchema().dump(Movie(**movie).model_dump())` gives, shaped directly from
    a Movie's dump or its stored fields: marshmallow costs 60 µs a movie, a quarter of a cold
    GET /movies/{id}. Absent fields take the model's defaults."""
    rating, external_ids = movie.get("rating") or {}, movie.get("external_ids") or {}
    updated_at, histogram = rating.get("updated_at"), rating.get("histogram", _NO_VOTES)
    return {
        "id": str(movie["id"]),
        "title": movie["title"],
        "aliases": list(movie.get("aliases", ())),
        "year": movie.get("year"),
        "genres": list(movie.get("genres", ())),
        "external_ids": {name: external_ids.get(name) for name in _EXTERNAL_IDS},
        "rating": {
            "count": rating.get("count", 0),
            "mean": rating.get("mean"),
            "histogram": dict(zip(_HISTOGRAM_KEYS, histogram, strict=True)),
            "weighted": rating.get("weighted"),
            "updated_at": None if updated_at is None else updated_at.isoformat(),
        },
    }


class GenreSchema(Schema):
    name = fields.String(metadata={"example": "Comedy"})
    movies = fields.Integer(metadata={"description": "Movies in this genre"})


class GenreListSchema(Schema):
    items = fields.List(fields.Nested(GenreSchema))


class PageQuery(Schema):
    limit = PAGE_LIMIT
    offset = PAGE_OFFSET
    cursor = PAGE_CURSOR

    @validates_schema
    def _one_start(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data.get("cursor") is not None and data.get("offset"):
            raise ValidationError("Give either a cursor or an offset.", "offset")


class MovieListQuery(PageQuery):
    q = fields.String(
        validate=validate.Length(1, 200),
        metadata={
            "description": "Words of a title or another name of the film, in any order, "
            "case, accents and punctuation; the last word may be cut short: `incep`, "
            "`the matrix`, `amelie`, `star wars empire strikes back`. A query whose "
            "longest word has two letters or digits finds exact names only (`up`, `pi`)"
        },
    )
    genre = fields.String(
        validate=validate.Length(1, 40), metadata={"description": "In any case: comedy, Comedy"}
    )
    year_min = fields.Integer(validate=validate.Range(1870, 2100))
    year_max = fields.Integer(validate=validate.Range(1870, 2100))
    min_votes = fields.Integer(validate=validate.Range(0, 10_000_000))
    sort = fields.String(
        validate=validate.OneOf(
            [f"{d}{k}" for k in ("title", "year", "mean", "votes", "weighted") for d in ("", "-")]
        ),
        metadata={
            "description": "A leading '-' sorts descending. Without it: by relevance when "
            "`q` is given (exact title, then the words as a phrase, then all words, then "
            "the last one as a prefix; ties by number of ratings), else in the first order "
            "the filter is served in, else by title. Without `q`, a filter is served in "
            "the orders its index reads: `genre` by -weighted or weighted, `year_min`/"
            "`year_max` by year or -year, `min_votes` by -votes or votes; other filters "
            "and sorts together are a 422 whose `served` lists these."
        },
    )


class MovieIdPath(Schema):
    movie_id = ObjectIdField(
        required=True,
        metadata={"description": "A movie's id: the `id` of an item of GET /api/v1/movies"},
    )


class MoviePageSchema(Schema):
    items = fields.List(fields.Nested(MoviePublicSchema))
    next = fields.String(allow_none=True)


# ---- ratings ----------------------------------------------------------------------------


def _half_star(value: float) -> None:
    if not 0.5 <= value <= 5.0 or value * 2 != int(value * 2):
        raise ValidationError("Must be between 0.5 and 5.0 in steps of 0.5.")


class RatingPutSchema(Schema):
    score = StrictNumber(
        required=True,
        validate=_half_star,
        metadata={"example": 4.5, "minimum": 0.5, "maximum": 5.0, "multipleOf": 0.5},
    )


class RatingPublicSchema(Schema):
    movie_id = ObjectIdField()
    user_id = ObjectIdField()
    score = fields.Float()
    rated_at = fields.DateTime()
    updated_at = fields.DateTime()


class MovieCardRatingSchema(Schema):
    count = fields.Integer()
    mean = fields.Float(allow_none=True)


class MovieCardSchema(Schema):
    id = ObjectIdField()
    title = fields.String()
    year = fields.Integer(allow_none=True)
    rating = fields.Nested(MovieCardRatingSchema)


class ProfileItemSchema(RatingPublicSchema):
    movie = fields.Nested(MovieCardSchema)


class RatingPageSchema(Schema):
    items = fields.List(fields.Nested(RatingPublicSchema))
    next = fields.String(allow_none=True)


class ProfilePageSchema(Schema):
    items = fields.List(fields.Nested(ProfileItemSchema))
    next = fields.String(allow_none=True)


class ProfileQuery(PageQuery):
    sort = fields.String(load_default="recent", validate=validate.OneOf(["recent", "score"]))


# ---- recommendations --------------------------------------------------------------------


class SuggestionSchema(Schema):
    movie = fields.Nested(MovieCardSchema)
    score = fields.Float(
        metadata={
            "description": "Cosine of the two movies, the predicted preference, or the "
            "recent popularity (1 for the most popular lately)"
        }
    )
    reason = fields.String(
        allow_none=True,
        metadata={
            "description": "Why it is listed: the liked movie that led to it, or how many "
            "who like the movie asked about like it too; null on the popularity lists",
            "example": "because you rated Heat 4.5",
        },
    )


class RecommenderModelSchema(Schema):
    version = fields.Integer()
    trained_at = fields.DateTime()


class SimilarSchema(Schema):
    items = fields.List(fields.Nested(SuggestionSchema))
    model = fields.Nested(
        RecommenderModelSchema,
        allow_none=True,
        metadata={"description": "The trained model that answered; null before the first"},
    )


class RecommendationsSchema(SimilarSchema):
    strategy = fields.String(
        validate=validate.OneOf(["collaborative", "popular-recently", "top-rated"]),
        metadata={
            "description": "collaborative: from the model and your likes (4.0 or more), "
            "blended with what people liked lately; popular-recently: what people liked "
            "lately, while you like fewer than 3 movies the model knows; top-rated: by "
            "weighted score, before the first model is trained"
        },
    )


class SimilarQuery(Schema):
    limit = fields.Integer(load_default=10, validate=validate.Range(1, 50))


class RecommendationsQuery(Schema):
    limit = fields.Integer(load_default=20, validate=validate.Range(1, 50))
    genre = fields.String(
        validate=validate.Length(1, 40), metadata={"description": "In any case: comedy, Comedy"}
    )
    year_min = fields.Integer(validate=validate.Range(1870, 2100))
    year_max = fields.Integer(validate=validate.Range(1870, 2100))


# ---- health -----------------------------------------------------------------------------


class DiskSchema(Schema):
    free = fields.Integer(metadata={"description": "Bytes free on the database's disk"})
    total = fields.Integer(metadata={"description": "Size of the database's disk, in bytes"})
    floor = fields.Integer(metadata={"description": "Writes are refused under this many bytes"})
    writes = fields.String(metadata={"enum": ["accepted", "refused"]})


class ReadySchema(Schema):
    status = fields.String(metadata={"example": "ok"})
    checks = fields.Dict(keys=fields.String(), values=fields.String())
    disk = fields.Nested(DiskSchema)


class HealthSchema(Schema):
    status = fields.String()
    pid = fields.Integer(metadata={"description": "The answering process (WEB_CONCURRENCY > 1)"})
    checks = fields.Dict(keys=fields.String(), values=fields.String())


# ---- imports ----------------------------------------------------------------------------


class ImportCreateSchema(Schema):
    source = fields.String(required=True, validate=validate.OneOf(["movielens"]))
    path = fields.String(
        validate=validate.Length(1, 1024),
        metadata={"description": "A folder or .zip, relative to the server's import root."},
    )
    url = fields.Url(
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2048),
        metadata={"description": "A MovieLens .zip to download instead of a path."},
    )
    dry_run = fields.Boolean(load_default=False)

    @validates_schema
    def _one_origin(self, data: dict, **kwargs: Any) -> None:
        if ("path" in data) == ("url" in data):
            raise ValidationError("Give exactly one of path and url.")


class CountsSchema(Schema):
    inserted = fields.Integer()
    updated = fields.Integer()
    unchanged = fields.Integer()


class ImportCountsSchema(Schema):
    movies = fields.Nested(CountsSchema)
    users = fields.Nested(CountsSchema)
    ratings = fields.Nested(CountsSchema)
    tags = fields.Integer()
    merged = fields.Integer(
        metadata={
            "description": "Release records of a film another record of the release stands "
            "for (same IMDb or TMDb id): their ratings went to that record"
        }
    )


class BadRowSchema(Schema):
    file = fields.String()
    line = fields.Integer()
    reason = fields.String()


class BadRowsSchema(Schema):
    count = fields.Integer()
    samples = fields.List(fields.Nested(BadRowSchema))


class FileProgressSchema(Schema):
    done = fields.Integer()
    total = fields.Integer()


class ImportJobSchema(Schema):
    id = ObjectIdField()
    source = fields.String()
    path = fields.String(allow_none=True)
    url = fields.String(allow_none=True)
    dry_run = fields.Boolean()
    status = fields.String(
        metadata={"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}
    )
    cancel_requested = fields.Boolean()
    attempts = fields.Integer()
    waiting_for = fields.String(
        allow_none=True,
        metadata={"description": "While queued behind another import: the one writing now"},
    )
    progress = fields.Dict(keys=fields.String(), values=fields.Nested(FileProgressSchema))
    counts = fields.Nested(ImportCountsSchema)
    bad_rows = fields.Nested(BadRowsSchema)
    timings = fields.Dict(keys=fields.String(), values=fields.Float())
    error = fields.String(allow_none=True)
    created_by_client = fields.String(
        allow_none=True,
        metadata={"description": "The operator client that started it (null: a person did)"},
    )
    created_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class ImportIdPath(Schema):
    import_id = ObjectIdField(required=True)


class ImportPageSchema(Schema):
    items = fields.List(fields.Nested(ImportJobSchema))
    next = fields.String(allow_none=True)
