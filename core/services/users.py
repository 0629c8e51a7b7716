"""Accounts over their life: registration, lookup, self-service changes, disabling, roles,
deletion, admin bootstrap."""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Literal

from core import names, summaries
from core.cache import Cache
from core.errors import (
    Conflict,
    Forbidden,
    InvalidInput,
    NotFound,
    Unauthorized,
    WrongPassword,
)
from core.queue import TaskQueue
from core.security import hash_password_pooled, verify_password_pooled
from core.services import sessions
from core.store import Duplicate
from core.store import identities as identity_store
from core.store import tokens as token_store
from core.store import users as user_store
from models import PydanticObjectId, User, utcnow

audit = logging.getLogger("audit")

AdminMode = Literal["create", "promote", "reset-password"]


def _conflict(exc: Duplicate) -> Conflict:
    field = "email" if exc.field == "email" else "username"
    return Conflict(f"That {field} is already taken.", field=field)


async def create_user(
    *, username: str, email: str, display_name: str, password: str, role: str = "user"
) -> User:
    """Register a local account; 409 when the username or email is taken, 422 when a field
    breaks its rule (core.names), the importer's namespace among them."""
    username = names.normalize_username(username)
    problems = {
        field: [problem]
        for field, problem in (
            ("username", names.username_problem(username)),
            ("email", names.email_problem(email)),
            ("display_name", names.display_name_problem(display_name)),
            ("password", names.password_problem(password)),
        )
        if problem is not None
    }
    if problems:
        raise InvalidInput(f"Not a valid account: {', '.join(problems)}.", problems)
    if await user_store.is_retired(username):
        raise Conflict("That username belonged to a deleted account recently.", field="username")
    password_hash = await hash_password_pooled(password)
    user = User(
        username=username,
        email=email.lower(),
        display_name=display_name,
        password_hash=password_hash,
        role=role,  # type: ignore[arg-type]
    )
    try:
        return await user_store.insert(user)
    except Duplicate as exc:
        raise _conflict(exc) from None


async def get_user(*, user_id: PydanticObjectId) -> User:
    """Fetch one user or raise NotFound."""
    user = await user_store.get(user_id)
    if user is None:
        raise NotFound("No user with that id.")
    return user


async def active_user(*, user_id: PydanticObjectId) -> User:
    """The caller's own account; Unauthorized when it is disabled or gone: its tokens stop
    at the first request that reads it."""
    user = await user_store.get(user_id)
    if user is None or user.disabled_at is not None:
        raise Unauthorized("This account is disabled or no longer exists.")
    return user


async def disable_user(
    *, user_id: PydanticObjectId, actor: str, refresh_ttl: int, cache: Cache
) -> User:
    """Stop an account: no login, no refresh (every session ends), no /users/me."""
    user = await get_user(user_id=user_id)
    await user_store.set_fields(user_id, {"disabled_at": utcnow(), "updated_at": utcnow()})
    await sessions.revoke_other_sessions(user_id=user_id, keep=None, refresh_ttl=refresh_ttl)
    await cache.users_changed([user_id])
    audit.info("user disabled", extra={"actor": actor, "user_id": str(user_id)})
    return await get_user(user_id=user.id)  # type: ignore[arg-type]


async def enable_user(*, user_id: PydanticObjectId, actor: str, cache: Cache) -> User:
    """Let a disabled account log in again."""
    await get_user(user_id=user_id)
    await user_store.set_fields(user_id, {"disabled_at": None, "updated_at": utcnow()})
    await cache.users_changed([user_id])
    audit.info("user enabled", extra={"actor": actor, "user_id": str(user_id)})
    return await get_user(user_id=user_id)


async def set_role(
    *, user_id: PydanticObjectId, role: str, actor: str, refresh_ttl: int, cache: Cache
) -> User:
    """Make a user an admin or a plain user; a demotion ends their sessions (a refresh would
    otherwise keep the admin scopes it was granted until it expired)."""
    user = await get_user(user_id=user_id)
    if user.role == role:
        return user
    await user_store.set_fields(user_id, {"role": role, "updated_at": utcnow()})
    if role != "admin":
        await sessions.revoke_other_sessions(user_id=user_id, keep=None, refresh_ttl=refresh_ttl)
    await cache.users_changed([user_id])
    audit.info(
        "user role changed",
        extra={"actor": actor, "user_id": str(user_id), "from": user.role, "to": role},
    )
    return await get_user(user_id=user_id)


async def delete_user(
    *, user_id: PydanticObjectId, actor: str, retire_days: int, queue: TaskQueue, cache: Cache
) -> None:
    """Delete an account and everything that is theirs: ratings (the movies' summaries heal
    through a durable intent, recorded first, as for a deleted movie), provider links and
    sessions. The username is kept from new accounts for `retire_days`."""
    user = await get_user(user_id=user_id)
    intent = await summaries.record_intent(user_ids=[user_id])
    if not await user_store.delete(user_id):
        await summaries.withdraw_intent(intent)
        raise NotFound("No user with that id.")
    if retire_days:
        await user_store.retire(user.username, until=utcnow() + timedelta(days=retire_days))
    await summaries.purge_user_ratings([user_id])
    await identity_store.delete_of_user(user_id)
    await token_store.delete_of_user(user_id)
    await cache.users_changed([user_id])
    await queue.request_drain()
    audit.info("user deleted", extra={"actor": actor, "user_id": str(user_id)})


async def delete_own_account(
    *,
    user: User,
    current_password: str | None,
    auth_time: int | None,
    fresh_login_seconds: int,
    retire_days: int,
    queue: TaskQueue,
    cache: Cache,
) -> None:
    """A person deletes their own account: with their password, or (an account without one)
    from a provider login at most `fresh_login_seconds` old."""
    if user.password_hash is not None:
        if current_password is None or not await verify_password_pooled(
            user.password_hash, current_password
        ):
            raise WrongPassword("Deleting the account needs the current password.")
    elif auth_time is None or time.time() - auth_time > fresh_login_seconds:
        raise Forbidden(
            "Log in through your provider again, then delete the account within "
            f"{fresh_login_seconds // 60} minutes."
        )
    assert user.id is not None
    await delete_user(
        user_id=user.id, actor=f"user:{user.id}", retire_days=retire_days, queue=queue, cache=cache
    )


async def user_by_name(*, username: str) -> User:
    """One user by username, or NotFound."""
    user = await user_store.by_username(names.normalize_username(username))
    if user is None:
        raise NotFound(f"No user {username!r}.")
    return user


async def authenticate(*, username: str, password: str) -> User | None:
    """The user whose local password matches, else None (constant work either way)."""
    user = await user_store.by_username(username.lower())
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
    assert user.id is not None
    try:
        await user_store.set_fields(user.id, changes)
    except Duplicate as exc:
        raise _conflict(exc) from None
    if sensitive:
        await sessions.revoke_other_sessions(user_id=user.id, keep=session, refresh_ttl=refresh_ttl)
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
    existing = await user_store.by_username(username)
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
        if problem := names.password_problem(password):
            raise InvalidInput("Not a valid password.", {"password": [problem]})
        changes["password_hash"] = await hash_password_pooled(password)
    await user_store.set_fields(existing.id, changes)
    if mode == "reset-password":
        await sessions.revoke_other_sessions(
            user_id=existing.id, keep=None, refresh_ttl=refresh_ttl
        )
        return existing, "password reset"
    return existing, "promoted"
