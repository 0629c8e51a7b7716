"""Domain errors raised by services; one middleware renders them as problem+json."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service may raise on purpose."""

    status = 400
    title = "Bad Request"
    slug = "bad-request"

    def __init__(self, detail: str, *, headers: dict[str, str] | None = None, **extra: Any):
        super().__init__(detail)
        self.detail = detail
        self.headers = headers or {}  # response headers the answer must carry
        self.extra = extra  # further members of the problem body


class BadCursor(DomainError):
    """A page cursor this API did not issue, was altered, or belongs to another list."""

    status, title, slug = 400, "Bad Cursor", "bad-cursor"


class NotFound(DomainError):
    status, title, slug = 404, "Not Found", "not-found"


class Conflict(DomainError):
    status, title, slug = 409, "Conflict", "conflict"


class Forbidden(DomainError):
    status, title, slug = 403, "Forbidden", "forbidden"


class Unauthorized(DomainError):
    """Missing or invalid credentials; rendered with a WWW-Authenticate challenge."""

    status, title, slug = 401, "Unauthorized", "unauthorized"

    def __init__(self, detail: str, *, error: str | None = "invalid_token", **extra: Any):
        super().__init__(detail, **extra)
        self.error = error


class InvalidInput(DomainError):
    """Input that parsed but breaks a rule; `errors` maps field -> messages."""

    status, title, slug = 422, "Unprocessable Content", "validation-error"

    def __init__(
        self,
        detail: str,
        errors: dict[str, Any] | None = None,
        *,
        location: str = "json",
        **extra: Any,
    ) -> None:
        super().__init__(detail, **extra)
        self.errors = errors or {}
        self.location = location  # where the fields named in `errors` were sent


class WrongPassword(InvalidInput):
    """The current password given to confirm an account change is missing or wrong."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"current_password": ["Missing or wrong."]})


class TooManyRequests(DomainError):
    """Over a rate limit; `headers` carry Retry-After and the RateLimit fields."""

    status, title, slug = 429, "Too Many Requests", "rate-limited"


class ServiceUnavailable(DomainError):
    status, title, slug = 503, "Service Unavailable", "service-unavailable"


class StorageFull(ServiceUnavailable):
    """The database's disk is under its free-space floor: writes wait until it has room."""

    slug = "storage-full"


class OAuthError(Exception):
    """RFC 6749 §5.2 token endpoint error."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
