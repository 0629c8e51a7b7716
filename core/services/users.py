"""Accounts: registration, lookup, self-service changes, admin bootstrap."""

from __future__ import annotations

from typing import Literal

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from core import names
from core.cache import Cache
from core.errors import Conflict, InvalidInput, NotFound, WrongPassword
from core.security import hash_password_pooled, verify_password_pooled
from core.services import duplicate_field
from core.services import tokens as token_service
from models import User, utcnow

AdminMode = Literal["create", "promote", "reset-password"]


def _conflict(exc: DuplicateKeyError) -> Conflict:
    field = "email" if duplicate_field(exc) == "email" else "username"
    return Conflict(f"That {field} is already taken.", field=field)


async def create_user(
    *, username: str, email: str, display_name: str, password: str, role: str = "user"
) -> User:
    """Register a local account; 409 when the username or email is taken, 422 when the
    importer's namespace holds it."""
    if names.is_reserved(names.normalize_username(username)):
        raise InvalidInput(
            "That username is kept for imported MovieLens users.",
            {"username": ["Names movielens-<number> are kept for imported users."]},
        )
    password_hash = await hash_password_pooled(password)
    user = User(
        username=names.normalize_username(username),
        email=email.lower(),
        display_name=display_name,
        password_hash=password_hash,
        role=role,  # type: ignore[arg-type]
    )
    try:
        await user.insert()
    except DuplicateKeyError as exc:
        raise _conflict(exc) from None
    return user


async def get_user(*, user_id: PydanticObjectId) -> User:
    """Fetch one user or raise NotFound."""
    user = await User.get(user_id)
    if user is None:
        raise NotFound("No user with that id.")
    return user


async def authenticate(*, username: str, password: str) -> User | None:
    """The user whose local password matches, else None (constant work either way)."""
    user = await User.find_one({"username": username.lower()})
    ok = await verify_password_pooled(user.password_hash if user else None, password)
    return user if ok and user is not None else None


async def update_user(
    *,
    user: User,
    display_name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    current_password: str | None = None,
    session: str | None,
    refresh_ttl: int,
    cache: Cache,
) -> User:
    """Change one's own display name, email or password. The email and the password need the
    current password (WrongPassword), and changing either ends every other login."""
    changes: dict[str, object] = {}
    if display_name is not None:
        changes["display_name"] = display_name
    if email is not None and email.lower() != user.email:
        changes["email"] = email.lower()
    sensitive = "email" in changes or password is not None
    # An account that only logs in through a provider has no password to confirm an email
    # change with; it cannot set a password this way either (verify_password(None) is False).
    if password is not None or ("email" in changes and user.password_hash is not None):
        what = "password" if password is not None else "email"
        if current_password is None or not await verify_password_pooled(
            user.password_hash, current_password
        ):
            raise WrongPassword(f"Changing the {what} needs the current password.")
    if password is not None:
        changes["password_hash"] = await hash_password_pooled(password)
    if not changes:
        return user
    changes["updated_at"] = utcnow()
    try:
        await User.get_motor_collection().update_one({"_id": user.id}, {"$set": changes})
    except DuplicateKeyError as exc:
        raise _conflict(exc) from None
    if sensitive:
        assert user.id is not None
        await token_service.revoke_other_sessions(
            user_id=user.id, keep=session, refresh_ttl=refresh_ttl
        )
    await cache.users_changed([user.id])
    for key, value in changes.items():
        setattr(user, key, value)
    return user


async def ensure_admin(
    *, username: str, email: str | None, password: str | None, mode: AdminMode, refresh_ttl: int
) -> tuple[User, str]:
    """Make `username` an admin; returns the user and what was done ("created", "promoted",
    "password reset"). An existing account is changed only as `mode` says: "promote" keeps
    its password and email, "reset-password" sets a new password and ends its logins;
    "create" refuses it (Conflict)."""
    username = names.normalize_username(username)
    existing = await User.find_one({"username": username})
    if existing is None:
        if email is None or password is None:
            raise NotFound(f"No user {username!r}; creating one needs --email and a password.")
        user = await create_user(
            username=username, email=email, display_name=username, password=password, role="admin"
        )
        return user, "created"
    if mode == "create":
        raise Conflict(
            f"User {username!r} exists. Use --promote to make them an admin (password and "
            "email unchanged) or --reset-password to also set a new password.",
            field="username",
        )
    assert existing.id is not None
    changes: dict[str, object] = {"role": "admin", "updated_at": utcnow()}
    if mode == "reset-password":
        if password is None:
            raise WrongPassword("--reset-password needs the new password.")
        changes["password_hash"] = await hash_password_pooled(password)
    await User.get_motor_collection().update_one({"_id": existing.id}, {"$set": changes})
    if mode == "reset-password":
        await token_service.revoke_other_sessions(
            user_id=existing.id, keep=None, refresh_ttl=refresh_ttl
        )
        return existing, "password reset"
    return existing, "promoted"
