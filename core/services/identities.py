"""Third-party identities: find the user an (issuer, subject) pair belongs to, or make one.

Only the provider's subject identifies a person. An email address, even a verified one,
never links accounts: a provider that lets people claim any address would otherwise hand
over someone else's account.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from core import names
from core.errors import Conflict, NotFound
from core.store import Duplicate
from core.store import identities as identity_store
from core.store import users as user_store
from models import Identity, PydanticObjectId, User

_NOT_ALLOWED = re.compile(r"[^a-z0-9_.-]+")


def _username_base(claims: dict[str, Any]) -> str:
    for candidate in (
        claims.get("preferred_username"),
        str(claims.get("email", "")).partition("@")[0],
        claims.get("name"),
    ):
        cleaned = _NOT_ALLOWED.sub("", str(candidate or "").lower().replace(" ", "."))[:24]
        if len(cleaned.strip("._-")) >= 3:
            return cleaned
    return "member"


async def _create_user(claims: dict[str, Any]) -> User:
    base = _username_base(claims)
    verified = claims.get("email_verified") is True and isinstance(claims.get("email"), str)
    email: str | None = claims["email"].lower() if verified else None
    display = names.clean_display_name(
        str(claims.get("name") or claims.get("preferred_username") or ""), fallback=base
    )
    username = base
    for _ in range(8):
        if names.is_reserved(username) or await user_store.is_retired(username):
            # The importer's namespace, or a deleted account's name: steer away from it.
            username = f"{base}-{secrets.randbelow(10**6):06d}-member"[:32]
            continue
        user = User(username=username, email=email, display_name=display)
        try:
            return await user_store.insert(user)
        except Duplicate as exc:
            if exc.field == "email":
                email = None  # the address belongs to another account: do not link, do not copy
            else:
                username = f"{base}-{secrets.randbelow(10**6):06d}"
    raise Conflict("Could not find a free username; try again.")


async def link_identity(*, provider: str, subject: str, user_id: PydanticObjectId) -> Identity:
    """Link (provider, subject) to the user; Conflict when another account has it."""
    key = Identity.key(provider, subject)
    existing = await identity_store.get(key)
    if existing is not None:
        if existing.user_id != user_id:
            raise Conflict("This identity is already linked to another account.")
        return existing
    if not await user_store.exists(user_id):
        raise NotFound("The account to link no longer exists.")
    return await _link(key, provider, {"sub": subject}, user_id)


async def identities_of(*, user_id: PydanticObjectId) -> list[Identity]:
    """The provider identities linked to a user, oldest first."""
    return await identity_store.of_user(user_id)


async def unlink_identity(*, user: User, provider: str) -> None:
    """Remove the user's link to `provider`; LastLogin when it is their only way to log in
    (no password and no other link)."""
    assert user.id is not None
    linked = await identities_of(user_id=user.id)
    gone = [i for i in linked if i.provider == provider]
    if not gone:
        raise NotFound(f"No {provider!r} identity is linked to this account.")
    if user.password_hash is None and len(linked) == len(gone):
        raise LastLogin("This is the account's only way to log in: link another provider first.")
    await identity_store.delete([i.id for i in gone], user_id=user.id)


class LastLogin(Conflict):
    """Removing this would leave an account nobody can log in to."""


async def login_with_identity(*, provider: str, claims: dict[str, Any]) -> tuple[User, bool]:
    """The user linked to (provider, sub), else a new one linked to it; True when created."""
    key = Identity.key(provider, str(claims["sub"]))
    existing = await identity_store.get(key)
    if existing is not None:
        user = await user_store.get(existing.user_id)
        if user is not None:
            return user, False
        await identity_store.delete_key(key)  # the account was removed: start afresh
    user = await _create_user(claims)
    assert user.id is not None
    try:
        await _link(key, provider, claims, user.id)
    except Conflict:
        # A concurrent first login of the same person won: use that account.
        await user_store.delete(user.id)
        winner = await identity_store.get(key)
        if winner is None:
            raise
        found = await user_store.get(winner.user_id)
        if found is None:
            raise
        return found, False
    return user, True


async def _link(
    key: str, provider: str, claims: dict[str, Any], user_id: PydanticObjectId
) -> Identity:
    identity = Identity(id=key, provider=provider, subject=str(claims["sub"]), user_id=user_id)
    try:
        await identity_store.insert(identity)
    except Duplicate:
        raise Conflict("This identity is already linked to another account.") from None
    return identity
