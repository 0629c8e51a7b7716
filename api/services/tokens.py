"""OAuth2 token grants: password and rotating refresh tokens with reuse detection."""

from __future__ import annotations

import hashlib
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta

from pymongo import ReturnDocument

from api.errors import OAuthError
from api.security import TokenService, scopes_for_role
from api.services import users as user_service
from models import RefreshToken, User, utcnow

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str
    expires_in: int
    scope: str


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _granted_scopes(role: str, requested: str | None) -> list[str]:
    allowed = scopes_for_role(role)
    if not requested:
        return list(allowed)
    wanted = requested.split()
    if not set(wanted) <= set(allowed):
        raise OAuthError("invalid_scope", "The requested scope exceeds what this account holds.")
    return [s for s in allowed if s in wanted]


async def _issue(
    *, tokens: TokenService, user_id: str, scopes: list[str], family_id: str, ttl: int
) -> TokenPair:
    refresh = secrets.token_urlsafe(32)
    now = utcnow()
    await RefreshToken(
        token_hash=_digest(refresh),
        family_id=family_id,
        user_id=user_id,  # type: ignore[arg-type]
        scope=" ".join(scopes),
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    ).insert()
    return TokenPair(
        access_token=tokens.issue(subject=user_id, scopes=scopes),
        refresh_token=refresh,
        expires_in=tokens.ttl,
        scope=" ".join(scopes),
    )


async def password_grant(
    *, tokens: TokenService, username: str, password: str, scope: str | None, refresh_ttl: int
) -> TokenPair:
    """Exchange a local username and password for a token pair."""
    user = await user_service.authenticate(username=username, password=password)
    if user is None:
        raise OAuthError("invalid_grant", "Wrong username or password.")
    scopes = _granted_scopes(user.role, scope)
    return await _issue(
        tokens=tokens,
        user_id=str(user.id),
        scopes=scopes,
        family_id=secrets.token_urlsafe(12),
        ttl=refresh_ttl,
    )


async def refresh_grant(
    *, tokens: TokenService, refresh_token: str, scope: str | None, refresh_ttl: int
) -> TokenPair:
    """Rotate a refresh token; presenting a used one revokes its whole family."""
    now = utcnow()
    before = await RefreshToken.get_motor_collection().find_one_and_update(
        {"token_hash": _digest(refresh_token)},
        {"$set": {"used_at": now}},
        return_document=ReturnDocument.BEFORE,
    )
    if before is None:
        raise OAuthError("invalid_grant", "Unknown refresh token.")
    stored = RefreshToken.model_validate(before)
    if stored.used_at is not None or stored.revoked_at is not None:
        await revoke_family(family_id=stored.family_id)
        log.warning("refresh token reuse; family revoked", extra={"family": stored.family_id})
        raise OAuthError("invalid_grant", "This refresh token was already used.")
    if stored.expires_at <= now:
        raise OAuthError("invalid_grant", "The refresh token has expired.")
    user = await User.get(stored.user_id)
    if user is None:
        raise OAuthError("invalid_grant", "The account no longer exists.")
    # The new pair never holds more than the old one, nor more than the account now allows.
    held = [s for s in _granted_scopes(user.role, None) if s in stored.scope.split()]
    scopes = _granted_scopes(user.role, scope) if scope else held
    if not set(scopes) <= set(held):
        raise OAuthError("invalid_scope", "The requested scope exceeds the original grant.")
    return await _issue(
        tokens=tokens,
        user_id=str(user.id),
        scopes=scopes,
        family_id=stored.family_id,
        ttl=refresh_ttl,
    )


async def revoke_family(*, family_id: str) -> None:
    """Revoke every refresh token descended from one login."""
    await RefreshToken.get_motor_collection().update_many(
        {"family_id": family_id}, {"$set": {"revoked_at": utcnow()}}
    )
