"""Account routes: register, public profile, one's own account."""

from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import json_schema, match_info_schema, response_schema

from api.appkeys import CACHE, LIMITER, QUEUE, SETTINGS
from api.handlers import person_id, principal
from api.handlers.auth import login_succeeded, rate_limit, refuse
from api.http import (
    PRIVATE,
    PUBLIC,
    authenticated,
    cached_json,
    cached_read,
    client_address,
    docs,
    errors,
    json_response,
)
from api.schemas import (
    AccountDeleteSchema,
    UserCreateSchema,
    UserIdPath,
    UserPrivateSchema,
    UserPublicSchema,
    UserUpdateSchema,
)
from core.errors import WrongPassword
from core.services import users as user_service

_public = UserPublicSchema()
_private = UserPrivateSchema()


@docs(
    tags=["users"],
    summary="Register a local account",
    description="Accounts made per client IP are limited: 429 with Retry-After.",
    responses=errors(409, 415, 422, 429),
    links={
        201: {
            name: {"operationId": op, "parameters": {"user_id": "$response.body#/id"}}
            for name, op in (("GetUser", "get_user"), ("ListUserRatings", "user_ratings"))
        }
    },
)
@json_schema(UserCreateSchema)
@response_schema(UserPrivateSchema, 201)
async def register(request: web.Request) -> web.Response:
    """Create a local account."""
    settings = request.app[SETTINGS]
    limit = ("signup", client_address(request), settings.signup_rate_per_ip)
    refuse(await request.app[LIMITER].hit([(*limit, settings.signup_rate_window)]))
    body = request["json"]
    user = await user_service.create_user(
        username=body["username"],
        email=body["email"],
        display_name=body["display_name"],
        password=body["password"],
    )
    location = str(request.app.router["user"].url_for(user_id=str(user.id)))
    return json_response(_private.dump(user), status=201, headers={"Location": location})


@docs(
    tags=["users"], summary="A user's public profile and rating stats", responses=errors(404, 422)
)
@match_info_schema(UserIdPath)
@response_schema(UserPublicSchema, 200)
async def get_user(request: web.Request) -> web.Response:
    """Public view of one user."""
    user_id = request["match_info"]["user_id"]

    async def load() -> dict:
        return _public.dump(await user_service.get_user(user_id=user_id))

    return await cached_read(
        request, request.app[CACHE].keys.user(user_id), load, cache_control=PUBLIC
    )


@docs(tags=["users"], summary="Your own account, with email")
@authenticated(person=True)
@response_schema(UserPrivateSchema, 200)
async def get_me(request: web.Request) -> web.Response:
    """The caller's own account."""
    user = await user_service.active_user(user_id=person_id(request))
    return cached_json(request, _private.dump(user), cache_control=PRIVATE)


@docs(
    tags=["users"],
    summary="Change your display name, email or password",
    description="Changing the email or the password needs `current_password` and ends "
    "every other login of the account (their refresh tokens stop working). Wrong "
    "`current_password` attempts count like failed logins: 429 with Retry-After.",
    responses=errors(409, 415, 422, 429),
)
@authenticated(person=True)
@json_schema(UserUpdateSchema)
@response_schema(UserPrivateSchema, 200)
async def update_me(request: web.Request) -> web.Response:
    """Apply the caller's changes to their own account."""
    user = await user_service.active_user(user_id=person_id(request))
    body = request["json"]
    confirming = "current_password" in body
    if confirming:
        await rate_limit(request, user.username)
    try:
        user = await user_service.update_user(
            user=user,
            session=principal(request).session,
            refresh_ttl=request.app[SETTINGS].refresh_token_ttl,
            cache=request.app[CACHE],
            **body,
        )
    except WrongPassword:
        raise  # counted as a guess before the check
    if confirming:
        await login_succeeded(request, user.username)
    return json_response(_private.dump(user))


@docs(
    tags=["users"],
    summary="Delete your account, your ratings, links and logins",
    description="Needs `current_password`; an account without a password needs a provider "
    "login from the last FRESH_LOGIN_SECONDS (403 otherwise). Movie summaries heal through "
    "the drains; the username stays unusable for USERNAME_RETIRED_DAYS. Wrong passwords "
    "count like failed logins: 429 with Retry-After.",
    responses={204: {"description": "Deleted"}, **errors(403, 415, 422, 429)},
)
@authenticated(person=True)
@json_schema(AccountDeleteSchema)
async def delete_me(request: web.Request) -> web.Response:
    """Delete the caller's own account."""
    user = await user_service.active_user(user_id=person_id(request))
    current_password = request["json"].get("current_password")
    if current_password is not None:
        await rate_limit(request, user.username)
    settings = request.app[SETTINGS]
    await user_service.delete_own_account(
        user=user,
        current_password=current_password,
        auth_time=principal(request).auth_time,
        fresh_login_seconds=settings.fresh_login_seconds,
        retire_days=settings.username_retired_days,
        queue=request.app[QUEUE],
        cache=request.app[CACHE],
    )
    return web.Response(status=204)
