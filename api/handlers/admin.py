"""Operator routes (users:admin): disable, enable, delete and change the role of accounts;
list and revoke operator clients. Each action is audited with who did it."""

from __future__ import annotations

from aiohttp import web
from aiohttp_apigami import json_schema, match_info_schema, response_schema

from api.appkeys import CACHE, QUEUE, SETTINGS
from api.handlers import principal
from api.http import authenticated, docs, errors, json_response
from api.schemas import (
    ClientIdPath,
    ClientListSchema,
    ClientSchema,
    RoleSchema,
    UserAdminSchema,
    UserIdPath,
)
from core.security import CLIENT_SUBJECT
from core.services import tokens as token_service
from core.services import users as user_service

ADMIN = "users:admin"
_account = UserAdminSchema()


def actor(request: web.Request) -> str:
    """Who is acting, for the audit log: "user:<id>" or "client:<client_id>"."""
    subject = principal(request).subject
    return subject if subject.startswith(CLIENT_SUBJECT) else f"user:{subject}"


@docs(
    tags=["admin"],
    summary="Disable an account: no login or refresh, its sessions end, /users/me refuses",
    responses=errors(404, 422),
)
@authenticated(ADMIN)
@match_info_schema(UserIdPath)
@response_schema(UserAdminSchema, 200)
async def disable_user(request: web.Request) -> web.Response:
    """Stop an account."""
    user = await user_service.disable_user(
        user_id=request["match_info"]["user_id"],
        actor=actor(request),
        refresh_ttl=request.app[SETTINGS].refresh_token_ttl,
        cache=request.app[CACHE],
    )
    return json_response(_account.dump(user))


@docs(tags=["admin"], summary="Enable a disabled account", responses=errors(404, 422))
@authenticated(ADMIN)
@match_info_schema(UserIdPath)
@response_schema(UserAdminSchema, 200)
async def enable_user(request: web.Request) -> web.Response:
    """Let an account log in again."""
    user = await user_service.enable_user(
        user_id=request["match_info"]["user_id"], actor=actor(request), cache=request.app[CACHE]
    )
    return json_response(_account.dump(user))


@docs(
    tags=["admin"],
    summary="Make a user an admin, or demote one (a demotion ends their sessions)",
    responses=errors(404, 415, 422),
)
@authenticated(ADMIN)
@match_info_schema(UserIdPath)
@json_schema(RoleSchema)
@response_schema(UserAdminSchema, 200)
async def set_role(request: web.Request) -> web.Response:
    """Change a user's role."""
    user = await user_service.set_role(
        user_id=request["match_info"]["user_id"],
        role=request["json"]["role"],
        actor=actor(request),
        refresh_ttl=request.app[SETTINGS].refresh_token_ttl,
        cache=request.app[CACHE],
    )
    return json_response(_account.dump(user))


@docs(
    tags=["admin"],
    summary="Delete an account with its ratings, links and sessions",
    description="Movie summaries heal through the drains. The username stays unusable for "
    "USERNAME_RETIRED_DAYS.",
    responses={204: {"description": "Deleted"}, **errors(404, 422)},
)
@authenticated(ADMIN)
@match_info_schema(UserIdPath)
async def delete_user(request: web.Request) -> web.Response:
    """Delete an account."""
    await user_service.delete_user(
        user_id=request["match_info"]["user_id"],
        actor=actor(request),
        retire_days=request.app[SETTINGS].username_retired_days,
        queue=request.app[QUEUE],
        cache=request.app[CACHE],
    )
    return web.Response(status=204)


@docs(tags=["admin"], summary="Every operator client, revoked ones too")
@authenticated(ADMIN)
@response_schema(ClientListSchema, 200)
async def list_clients(request: web.Request) -> web.Response:
    """The registered clients (never their secrets)."""
    clients = await token_service.list_clients()
    return json_response(ClientListSchema().dump({"items": clients}))


@docs(
    tags=["admin"],
    summary="Revoke an operator client: no new tokens, and its live ones fail at once",
    responses=errors(404, 422),
)
@authenticated(ADMIN)
@match_info_schema(ClientIdPath)
@response_schema(ClientSchema, 200)
async def revoke_client(request: web.Request) -> web.Response:
    """Revoke a client (idempotent)."""
    client_id = request["match_info"]["client_id"]
    client = await token_service.revoke_client(client_id=client_id, actor=actor(request))
    return json_response(ClientSchema().dump(client))
