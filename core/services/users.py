"""Accounts: registration, lookup, self-service changes, admin bootstrap."""

from __future__ import annotations

import asyncio

from beanie import PydanticObjectId
from pymongo.errors import DuplicateKeyError

from core.cache import Cache
from core.errors import Conflict, InvalidInput, NotFound
from core.security import hash_password, verify_password
from core.services import duplicate_field
from models import User, utcnow


def _conflict(exc: DuplicateKeyError) -> Conflict:
    field = "email" if duplicate_field(exc) == "email" else "username"
    return Conflict(f"That {field} is already taken.", field=field)


async def create_user(
    *, username: str, email: str, display_name: str, password: str, role: str = "user"
) -> User:
    """Register a local account; 409 when the username or email is taken."""
    password_hash = await asyncio.to_thread(hash_password, password)
    user = User(
        username=username,
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
    ok = await asyncio.to_thread(verify_password, user.password_hash if user else None, password)
    return user if ok and user is not None else None


async def update_user(
    *,
    user: User,
    display_name: str | None = None,
    email: str | None = None,
    password: str | None = None,
    current_password: str | None = None,
    cache: Cache,
) -> User:
    """Change one's own display name, email or password (the latter needs the current one)."""
    changes: dict[str, object] = {}
    if display_name is not None:
        changes["display_name"] = display_name
    if email is not None:
        changes["email"] = email.lower()
    if password is not None:
        if current_password is None or not await asyncio.to_thread(
            verify_password, user.password_hash, current_password
        ):
            raise InvalidInput(
                "Changing the password needs the current password.",
                {"current_password": ["Missing or wrong."]},
            )
        changes["password_hash"] = await asyncio.to_thread(hash_password, password)
    if not changes:
        return user
    changes["updated_at"] = utcnow()
    try:
        await User.get_motor_collection().update_one({"_id": user.id}, {"$set": changes})
    except DuplicateKeyError as exc:
        raise _conflict(exc) from None
    await cache.users_changed([user.id])
    for key, value in changes.items():
        setattr(user, key, value)
    return user


async def ensure_admin(*, username: str, email: str, password: str) -> tuple[User, bool]:
    """Create an admin, or promote and re-password an existing user; True when created."""
    existing = await User.find_one({"username": username.lower()})
    if existing is None:
        return await create_user(
            username=username.lower(),
            email=email,
            display_name=username,
            password=password,
            role="admin",
        ), True
    password_hash = await asyncio.to_thread(hash_password, password)
    try:
        await User.get_motor_collection().update_one(
            {"_id": existing.id},
            {
                "$set": {
                    "role": "admin",
                    "email": email.lower(),
                    "password_hash": password_hash,
                    "updated_at": utcnow(),
                }
            },
        )
    except DuplicateKeyError as exc:
        raise _conflict(exc) from None
    existing.role = "admin"
    return existing, False
