"""The OAuth2 endpoints: token (RFC 6749), revocation (RFC 7009), and the public JWKS."""

from __future__ import annotations

import base64
import binascii
from typing import Any
from urllib.parse import unquote_plus

from aiohttp import web

from api.appkeys import LIMITER, OIDC, SETTINGS, TOKENS
from api.http import PUBLIC, client_address, docs, errors, json_response
from api.ratelimit import Verdict
from api.schemas import OAuthErrorSchema, TokenSchema
from core.errors import OAuthError, TooManyRequests
from core.services import tokens as token_service

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_FORM = "application/x-www-form-urlencoded"
_MAX_FIELD = 4096

_TEXT = {"type": "string", "minLength": 1, "maxLength": _MAX_FIELD}
_TOKEN_FORM = {
    "type": "object",
    "required": ["grant_type"],
    "properties": {
        "grant_type": {
            "type": "string",
            "enum": ["password", "refresh_token", "client_credentials", "authorization_code"],
        },
        "username": _TEXT,
        "password": {**_TEXT, "format": "password"},
        "refresh_token": _TEXT,
        "client_id": _TEXT,
        "client_secret": {**_TEXT, "format": "password"},
        "code": {**_TEXT, "description": "One-time code from a third-party login"},
        "scope": _TEXT,
    },
}
_REVOKE_FORM = {
    "type": "object",
    "required": ["token"],
    "properties": {
        "token": _TEXT,
        "token_type_hint": {
            "type": "string",
            "description": "refresh_token or access_token; other hints are ignored (RFC 7009)",
        },
    },
}
_OAUTH_ERROR = {
    "description": "RFC 6749 error",
    "content": {"application/json": {"schema": OAuthErrorSchema}},
}
_RATE_LIMITED = errors(429)[429]


def oauth_error(exc: OAuthError) -> web.Response:
    """RFC 6749 §5.2: the one error format OAuth2 clients read at these endpoints
    (application/json, `error` and `error_description`). Everything else is problem+json."""
    body = {"error": exc.error, "error_description": exc.description}
    headers = dict(NO_STORE)
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Basic realm="movie-ratings"'
    return json_response(body, status=exc.status, headers=headers)


def _client_credentials(request: web.Request, form: dict[str, str]) -> tuple[str, str]:
    """client_secret_basic (preferred, RFC 6749 §2.3.1) or client_secret_post."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            client_id, sep, secret = (
                base64.b64decode(encoded, validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "Malformed Basic credentials.", status=401) from None
        if not sep:
            raise OAuthError("invalid_client", "Malformed Basic credentials.", status=401)
        return unquote_plus(client_id), unquote_plus(secret)
    posted_id, posted_secret = form.get("client_id"), form.get("client_secret")
    if not posted_id or not posted_secret:
        raise OAuthError("invalid_client", "Client authentication is required.", status=401)
    return posted_id, posted_secret


def refuse(verdict: Verdict | None) -> Verdict | None:
    if verdict is not None and not verdict.allowed:
        raise TooManyRequests(
            f"Too many attempts; try again in {verdict.reset} s.",
            headers={**verdict.headers(), **NO_STORE},
        )
    return verdict


async def rate_limit(request: web.Request, account: str | None) -> Verdict | None:
    """Count an attempt per client IP; for a password check on an account, count it per
    (account, IP) before the check, and take it from the account's bucket unless this
    address has logged into the account before. TooManyRequests past a limit: guesses from
    many addresses run out the account's bucket, not its owner's known address."""
    settings = request.app[SETTINGS]
    window = settings.login_rate_window
    limiter = request.app[LIMITER]
    verdict = refuse(
        await limiter.hit([("ip", client_address(request), settings.login_rate_per_ip, window)])
    )
    if account is None:
        return verdict
    subject = account.lower()
    pair = f"{subject}\n{client_address(request)}"
    per_pair = refuse(
        await limiter.hit([("fail-pair", pair, settings.login_failures_per_pair, window)])
    )
    if not await limiter.known("known-pair", pair):
        refuse(
            await limiter.take(
                "checks", subject, burst=settings.login_checks_per_account, window=window
            )
        )
    return per_pair or verdict


async def login_succeeded(request: web.Request, account: str) -> None:
    """The password was right: the attempt was no guess (given back to the pair's count),
    and this address is known to the account from now on."""
    settings = request.app[SETTINGS]
    pair = f"{account.lower()}\n{client_address(request)}"
    limiter = request.app[LIMITER]
    await limiter.refund("fail-pair", pair)
    await limiter.remember("known-pair", pair, ttl=settings.login_known_address_days * 86400)


async def _form(request: web.Request, known: dict[str, Any]) -> dict[str, str]:
    """The recognised parameters of a form body, each given once as text; others are
    ignored, as RFC 6749 §3.2 asks."""
    if request.content_type != _FORM:
        raise OAuthError("invalid_request", f"The body must be {_FORM}.")
    try:
        form = await request.post()
    except (ValueError, UnicodeDecodeError):
        raise OAuthError("invalid_request", "The form body could not be decoded.") from None
    fields: dict[str, str] = {}
    for key in set(form) & set(known["properties"]):
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
    summary="Get tokens (password, refresh_token, client_credentials, authorization_code)",
    description="Attempts are limited per client IP, password checks per account and IP "
    "(counted before the check) and per account (a bucket the addresses it logged in from "
    "do not draw on): 429 with Retry-After.",
    requestBody={"required": True, "content": {_FORM: {"schema": _TOKEN_FORM}}},
    responses={
        200: {"description": "Tokens", "content": {"application/json": {"schema": TokenSchema}}},
        400: _OAUTH_ERROR,
        401: {**_OAUTH_ERROR, "description": "Client authentication failed"},
        429: _RATE_LIMITED,
    },
)
async def token(request: web.Request) -> web.Response:
    """Exchange credentials or a refresh token for tokens."""
    settings = request.app[SETTINGS]
    verdict: Verdict | None = None
    account: str | None = None
    try:
        form = await _form(request, _TOKEN_FORM)
        grant = form.get("grant_type")
        account = form.get("username") if grant == "password" else None
        client: tuple[str, str] | None = None
        if grant == "client_credentials":
            client = _client_credentials(request, form)
            account = f"client:{client[0]}"
        verdict = await rate_limit(request, account)
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
        elif grant == "authorization_code":
            (code,) = _required(form, "code")
            pair = await token_service.login_code_grant(
                tokens=request.app[TOKENS],
                user_id=await request.app[OIDC].take_code(code),
                scope=form.get("scope"),
                refresh_ttl=settings.refresh_token_ttl,
            )
        elif client is not None:
            pair = await token_service.client_credentials_grant(
                tokens=request.app[TOKENS],
                client_id=client[0],
                client_secret=client[1],
                scope=form.get("scope"),
            )
        elif not grant:
            raise OAuthError("invalid_request", "Missing: grant_type.")
        else:
            raise OAuthError("unsupported_grant_type", f"Unsupported grant_type '{grant[:40]}'.")
    except OAuthError as exc:
        response = oauth_error(exc)
        if verdict is not None:
            response.headers.update(verdict.headers())
        return response
    if account is not None:
        await login_succeeded(request, account)
    headers = {**NO_STORE, **(verdict.headers() if verdict else {})}
    return json_response(token_body(pair), headers=headers)


def token_body(pair: token_service.TokenPair) -> dict[str, object]:
    """RFC 6749 §5.1 success body."""
    body: dict[str, object] = {
        "access_token": pair.access_token,
        "token_type": "Bearer",
        "expires_in": pair.expires_in,
        "scope": pair.scope,
    }
    if pair.refresh_token is not None:
        body["refresh_token"] = pair.refresh_token
    return body


@docs(
    tags=["auth"],
    summary="Revoke a refresh token and every token rotated from it (RFC 7009)",
    requestBody={"required": True, "content": {_FORM: {"schema": _REVOKE_FORM}}},
    responses={
        200: {"description": "Revoked, or the token was unknown (RFC 7009 §2.2)"},
        400: _OAUTH_ERROR,
        429: _RATE_LIMITED,
    },
)
async def revoke(request: web.Request) -> web.Response:
    """Revoke a refresh token (its whole family)."""
    try:
        form = await _form(request, _REVOKE_FORM)
        await rate_limit(request, None)
        (value,) = _required(form, "token")
        await token_service.revoke(
            token=value,
            hint=form.get("token_type_hint"),
            refresh_ttl=request.app[SETTINGS].refresh_token_ttl,
        )
    except OAuthError as exc:
        return oauth_error(exc)
    return web.Response(status=200, headers=NO_STORE)


@docs(
    tags=["auth"],
    summary="The public keys that verify this API's access tokens (JWKS)",
    responses={200: {"description": "A JSON Web Key Set (RFC 7517)"}},
)
async def jwks(request: web.Request) -> web.Response:
    """Every key that may have signed a live token, public parts only."""
    return json_response(request.app[TOKENS].public_jwks(), headers={"Cache-Control": PUBLIC})
