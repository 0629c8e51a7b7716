"""Third-party identities: find the user an (issuer, subject) pair belongs to, or make one.

Only the provider's subject identifies a person. An email address, even a verified one,
never links accounts: a provider that lets people claim any address would otherwise hand
over someone else's account.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from core import names
from core.errors import Conflict, NotFound
from core.services import duplicate_field
from models import Identity, User

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
        user = User(username=username, email=email, display_name=display)
        try:
            await user.insert()
            return user
        except DuplicateKeyError as exc:
            if duplicate_field(exc) == "email":
                email = None  # the address belongs to another account: do not link, do not copy
            else:
                username = f"{base}-{secrets.randbelow(10**6):06d}"
    raise Conflict("Could not find a free username; try again.")


async def login_with_identity(
    *, provider: str, claims: dict[str, Any], link_user: str | None = None
) -> tuple[User, bool]:
    """The user linked to (provider, sub), linking or creating one; True when created."""
    key = Identity.key(provider, str(claims["sub"]))
    existing = await Identity.get(key)
    if link_user is not None:
        owner = PydanticObjectId(link_user)
        if existing is not None and existing.user_id != owner:
            raise Conflict("This identity is already linked to another account.")
        user = await User.get(owner)
        if user is None:
            raise NotFound("The account to link no longer exists.")
        if existing is None:
            await _link(key, provider, claims, owner)
        return user, False
    if existing is not None:
        user = await User.get(existing.user_id)
        if user is not None:
            return user, False
        await existing.delete()  # the account was removed: start afresh
    user = await _create_user(claims)
    assert user.id is not None
    try:
        await _link(key, provider, claims, user.id)
    except Conflict:
        # A concurrent first login of the same person won: use that account.
        await user.delete()
        winner = await Identity.get(key)
        if winner is None:
            raise
        found = await User.get(winner.user_id)
        if found is None:
            raise
        return found, False
    return user, True


async def _link(key: str, provider: str, claims: dict[str, Any], user_id: PydanticObjectId) -> None:
    try:
        await Identity(
            id=key, provider=provider, subject=str(claims["sub"]), user_id=user_id
        ).insert()
    except DuplicateKeyError:
        raise Conflict("This identity is already linked to another account.") from None
