"""OAuth2 token grants: password, rotating refresh tokens with reuse detection, operator
clients' client_credentials, and revocation (RFC 7009)."""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import timedelta

from core.errors import InvalidInput, NotFound, OAuthError, Unauthorized
from core.security import CLIENT_SCOPES, CLIENT_SUBJECT, TokenService, scopes_for_role
from core.services import sessions
from core.services import users as user_service
from core.store import tokens as token_store
from core.store import users as user_store
from models import ApiClient, PydanticObjectId, RefreshToken, User, utcnow

audit = logging.getLogger("audit")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TokenPair:
    access_token: str
    refresh_token: str | None  # None for client_credentials (RFC 6749 §4.4.3)
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
    *,
    tokens: TokenService,
    user_id: str,
    scopes: list[str],
    family_id: str,
    ttl: int,
    auth_time: int | None = None,
) -> TokenPair:
    refresh = secrets.token_urlsafe(32)
    now = utcnow()
    await token_store.insert_refresh(
        RefreshToken(
            token_hash=_digest(refresh),
            family_id=family_id,
            user_id=user_id,  # type: ignore[arg-type]
            scope=" ".join(scopes),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl),
        )
    )
    return TokenPair(
        access_token=tokens.issue(
            subject=user_id, scopes=scopes, session=family_id, auth_time=auth_time
        ),
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
    return await user_tokens(tokens=tokens, user=user, scope=scope, refresh_ttl=refresh_ttl)


async def user_tokens(
    *, tokens: TokenService, user: User, scope: str | None, refresh_ttl: int
) -> TokenPair:
    """A new token pair (a new refresh family) for a user who has just proved who they are;
    its access token says when (`auth_time`). A disabled account gets none."""
    if user.disabled_at is not None:
        raise OAuthError("invalid_grant", "This account is disabled.")
    return await _issue(
        tokens=tokens,
        user_id=str(user.id),
        scopes=_granted_scopes(user.role, scope),
        family_id=secrets.token_urlsafe(12),
        ttl=refresh_ttl,
        auth_time=int(time.time()),
    )


async def login_code_grant(
    *, tokens: TokenService, user_id: str | None, scope: str | None, refresh_ttl: int
) -> TokenPair:
    """Tokens for the one-time code a third-party login handed to the front end."""
    user = await user_store.get(PydanticObjectId(user_id)) if user_id else None
    if user is None:
        raise OAuthError("invalid_grant", "Unknown, expired or already used code.")
    return await user_tokens(tokens=tokens, user=user, scope=scope, refresh_ttl=refresh_ttl)


async def refresh_grant(
    *, tokens: TokenService, refresh_token: str, scope: str | None, refresh_ttl: int
) -> TokenPair:
    """Rotate a refresh token; presenting a used one revokes its whole family."""
    now = utcnow()
    stored = await token_store.refresh_by_digest(_digest(refresh_token))
    if stored is None:
        raise OAuthError("invalid_grant", "Unknown refresh token.")
    # Read on every refresh: a token issued while its family was being revoked (a replay
    # racing the real client) is refused here, whatever order the two writes landed in.
    if await token_store.family_revoked(stored.family_id):
        raise OAuthError("invalid_grant", "This refresh token was revoked.")
    # Claim it: only one request can turn used_at from null to now.
    assert stored.id is not None
    if not await token_store.claim_refresh(stored.id, now=now):
        await sessions.revoke_families(
            user_id=stored.user_id, family_ids=[stored.family_id], refresh_ttl=refresh_ttl
        )
        log.warning("refresh token reuse; family revoked", extra={"family": stored.family_id})
        raise OAuthError("invalid_grant", "This refresh token was already used or revoked.")
    if stored.expires_at <= now:
        raise OAuthError("invalid_grant", "The refresh token has expired.")
    user = await user_store.get(stored.user_id)
    if user is None:
        raise OAuthError("invalid_grant", "The account no longer exists.")
    if user.disabled_at is not None:
        raise OAuthError("invalid_grant", "This account is disabled.")
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


async def create_client(*, name: str, scopes: list[str]) -> tuple[ApiClient, str]:
    """Register an operator client; returns it and its secret, which is not kept."""
    unknown = sorted(set(scopes) - set(CLIENT_SCOPES))
    if unknown or not scopes:
        raise InvalidInput(
            "A client holds one or more operator scopes.",
            {"scopes": [f"Choose from {', '.join(CLIENT_SCOPES)}; not {', '.join(unknown)}."]},
        )
    secret = secrets.token_urlsafe(32)
    client = ApiClient(
        client_id=f"mr_{secrets.token_hex(8)}",
        name=name,
        secret_hash=_digest(secret),
        scopes=[s for s in CLIENT_SCOPES if s in scopes],
    )
    await token_store.insert_client(client)
    return client, secret


async def list_clients() -> list[ApiClient]:
    """Every registered operator client, revoked ones too, oldest first."""
    return await token_store.clients()


async def revoke_client(*, client_id: str, actor: str) -> ApiClient:
    """Revoke a client: no new tokens, and its live ones fail at their next request."""
    client = await token_store.client(client_id)
    if client is None:
        raise NotFound("No client with that id.")
    if client.revoked_at is None:
        client.revoked_at = utcnow()
        await token_store.revoke_client(client_id, now=client.revoked_at)
        audit.info("client revoked", extra={"actor": actor, "client": client_id})
    return client


async def check_client(*, client_id: str) -> None:
    """Unauthorized unless the client exists and is not revoked: read on every request a
    client's token makes, so revoking one stops its tokens at once."""
    if not await token_store.client_live(client_id):
        raise Unauthorized("This client was revoked.")


async def client_credentials_grant(
    *, tokens: TokenService, client_id: str, client_secret: str, scope: str | None
) -> TokenPair:
    """An access token for a registered client, with at most its registered scopes."""
    client = await token_store.client(client_id)
    presented = _digest(client_secret)
    # Compare even for an unknown id, so timing does not tell which ids exist.
    known = hmac.compare_digest(presented, client.secret_hash if client else _digest(""))
    if client is None or not known or client.revoked_at is not None:
        raise OAuthError("invalid_client", "Unknown client or wrong secret.", status=401)
    scopes = client.scopes
    if scope:
        wanted = scope.split()
        if not set(wanted) <= set(client.scopes):
            raise OAuthError("invalid_scope", "The requested scope exceeds the client's.")
        scopes = [s for s in client.scopes if s in wanted]
    return TokenPair(
        access_token=tokens.issue(subject=f"{CLIENT_SUBJECT}{client.client_id}", scopes=scopes),
        refresh_token=None,
        expires_in=tokens.ttl,
        scope=" ".join(scopes),
    )


async def revoke(*, token: str, hint: str | None, refresh_ttl: int) -> None:
    """RFC 7009: revoke a refresh token and its family; unknown tokens are not an error."""
    if hint == "access_token" or token.count(".") == 2:
        # Access tokens are self-contained JWTs that live at most 15 minutes.
        raise OAuthError(
            "unsupported_token_type", "Access tokens expire; revoke the refresh token."
        )
    stored = await token_store.refresh_by_digest(_digest(token))
    if stored is not None:
        await sessions.revoke_families(
            user_id=stored.user_id, family_ids=[stored.family_id], refresh_ttl=refresh_ttl
        )
