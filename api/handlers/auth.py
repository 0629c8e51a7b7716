"""The OAuth2 token endpoint (RFC 6749): password and refresh_token grants."""

from __future__ import annotations

from aiohttp import web

from api.errors import OAuthError
from api.http import docs, json_response
from api.keys import SETTINGS, TOKENS
from api.schemas import OAuthErrorSchema, TokenSchema
from api.services import tokens as token_service

_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"
_MAX_FIELD = 4096

_TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {"type": "string", "enum": ["password", "refresh_token"]},
        "username": {"type": "string"},
        "password": {"type": "string", "format": "password"},
        "refresh_token": {"type": "string"},
        "scope": {"type": "string"},
    },
}


def oauth_error(exc: OAuthError) -> web.Response:
    """RFC 6749 §5.2 error body, with problem-details members alongside."""
    body = {
        "error": exc.error,
        "error_description": exc.description,
        "type": "about:blank",
        "title": exc.error,
        "status": exc.status,
        "detail": exc.description,
    }
    headers = dict(_NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="movie-ratings"'
    return json_response(body, status=exc.status, headers=headers)


async def _form(request: web.Request) -> dict[str, str]:
    if request.content_type != _FORM:
        raise OAuthError("invalid_request", f"The body must be {_FORM}.")
    try:
        form = await request.post()
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_request", "The form body could not be decoded.") from None
    fields: dict[str, str] = {}
    for key in form:
        values = form.getall(key)
        if len(values) != 1 or not isinstance(values[0], str) or len(values[0]) > _MAX_FIELD:
            raise OAuthError("invalid_request", f"'{key}' must be given once, as text.")
        fields[key] = values[0]
    return fields


def _required(form: dict[str, str], *names: str) -> list[str]:
    missing = [n for n in names if not form.get(n)]
    if missing:
        raise OAuthError("invalid_request", f"Missing: {', '.join(missing)}.")
    return [form[n] for n in names]


@docs(
    tags=["auth"],
    summary="Get tokens (OAuth2 password or refresh_token grant)",
    requestBody={"required": True, "content": {_FORM: {"schema": _TOKEN_FORM}}},
    responses={
        200: {"description": "Tokens", "content": {"application/json": {"schema": TokenSchema}}},
        400: {
            "description": "RFC 6749 error",
            "content": {"application/json": {"schema": OAuthErrorSchema}},
        },
    },
)
async def token(request: web.Request) -> web.Response:
    """Exchange credentials or a refresh token for a new token pair."""
    settings = request.app[SETTINGS]
    try:
        form = await _form(request)
        grant = form.get("grant_type")
        if grant == "password":
            username, password = _required(form, "username", "password")
            pair = await token_service.password_grant(
                tokens=request.app[TOKENS],
                username=username,
                password=password,
                scope=form.get("scope"),
                refresh_ttl=settings.refresh_token_ttl,
            )
        elif grant == "refresh_token":
            (refresh,) = _required(form, "refresh_token")
            pair = await token_service.refresh_grant(
                tokens=request.app[TOKENS],
                refresh_token=refresh,
                scope=form.get("scope"),
                refresh_ttl=settings.refresh_token_ttl,
            )
        elif not grant:
            raise OAuthError("invalid_request", "Missing: grant_type.")
        else:
            raise OAuthError("unsupported_grant_type", f"Unsupported grant_type '{grant[:40]}'.")
    except OAuthError as exc:
        return oauth_error(exc)
    body = {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "refresh_token": pair.refresh_token,
        "scope": pair.scope,
    }
    return json_response(body, headers=_NO_STORE)
