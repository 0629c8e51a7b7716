"""Third-party login (OpenID Connect authorization code flow with PKCE) and linking."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web
from aiohttp_apigami import json_schema, response_schema
from authlib.common.urls import add_params_to_uri

from api.appkeys import OIDC, SETTINGS, TOKENS
from api.handlers import person_id
from api.handlers.auth import NO_STORE, rate_limit, token_body
from api.http import authenticated, docs, errors, json_response
from api.schemas import IdentityListSchema, IdentitySchema, LinkCodeSchema, LinkCompleteSchema
from core.errors import Forbidden
from core.oidc import LoginFailed
from core.services import identities as identity_service
from core.services import tokens as token_service
from core.services import users as user_service

log = logging.getLogger("api.audit")

_RESPONSE_PARAM = {
    "in": "query",
    "name": "response",
    "schema": {"type": "string", "enum": ["redirect", "json"], "default": "redirect"},
    "description": "How the callback hands over tokens: JSON, or a redirect to the front end "
    "with a one-time code for POST /auth/token (grant_type=authorization_code).",
}
_PROVIDER_PARAM = {"in": "path", "name": "provider", "required": True, "schema": {"type": "string"}}


def _redirect_uri(request: web.Request, provider: str) -> str:
    """From settings only (PUBLIC_URL): never from the request's Host header."""
    path = request.app.router["oidc_callback"].url_for(provider=provider)
    return request.app[SETTINGS].public_base + str(path)


def _cookie_name(request: web.Request) -> str:
    # __Host-: only over https, for this host and path "/" (no subdomain can plant it).
    return "__Host-mr-login" if _https(request) else "mr-login"


def _https(request: web.Request) -> bool:
    return request.app[SETTINGS].public_base.startswith("https://")


def _to_provider(request: web.Request, url: str, browser: str) -> web.Response:
    """Send the browser to the provider holding the secret that binds it to this login."""
    response = web.Response(status=302, headers={"Location": url, **NO_STORE})
    response.set_cookie(
        _cookie_name(request),
        browser,
        max_age=request.app[SETTINGS].oidc_state_ttl,
        **_cookie_attributes(request),
    )
    return response


def _cookie_attributes(request: web.Request) -> dict[str, Any]:
    return {
        "path": "/",
        "httponly": True,
        "samesite": "Lax",  # sent on the provider's top-level redirect back, not subrequests
        "secure": _https(request) or request.app[SETTINGS].environment != "development",
    }


def _response_mode(request: web.Request) -> str:
    mode = request.query.get("response", "redirect")
    if mode not in ("redirect", "json"):
        raise LoginFailed("response must be 'redirect' or 'json'.")
    return mode


@docs(
    tags=["auth"],
    summary="Log in with a third-party OpenID Connect provider (redirects to it)",
    parameters=[_PROVIDER_PARAM, _RESPONSE_PARAM],
    responses={302: {"description": "To the provider's login page"}, **errors(400, 404, 429, 503)},
)
async def login(request: web.Request) -> web.StreamResponse:
    """Start the authorization code flow."""
    await rate_limit(request, None)
    provider = request.match_info["provider"]
    url, browser = await request.app[OIDC].authorization_url(
        provider,
        redirect_uri=_redirect_uri(request, provider),
        response=_response_mode(request),
    )
    return _to_provider(request, url, browser)


@docs(
    tags=["auth"],
    summary="Link another provider to your account: returns the URL to send the browser to",
    description="`authorization_url` is a one-time URL of this API, valid for a few minutes: "
    "open it in your own browser (it sets the cookie that binds the login to that browser, "
    "then goes to the provider). The provider sends the browser back with a one-time "
    "`link_code`; the link is made only when the account that started it sends that code to "
    "POST /auth/link/{provider}/complete with its own token.",
    parameters=[_PROVIDER_PARAM, _RESPONSE_PARAM],
    responses={200: {"description": "{authorization_url}"}, **errors(400, 404, 503)},
)
@authenticated(person=True)
async def link(request: web.Request) -> web.Response:
    """Start a login that links the provider's identity to the caller."""
    provider = request.match_info["provider"]
    oidc = request.app[OIDC]
    url, browser = await oidc.authorization_url(
        provider,
        redirect_uri=_redirect_uri(request, provider),
        response=_response_mode(request),
        link_user=str(person_id(request)),
    )
    ticket = await oidc.hand_over(url, browser)
    start = request.app.router["oidc_link_start"].url_for(provider=provider)
    start_url = add_params_to_uri(
        request.app[SETTINGS].public_base + str(start), {"ticket": ticket}
    )
    return json_response({"authorization_url": start_url}, headers=NO_STORE)


@docs(
    tags=["auth"],
    summary="Open a link URL in the browser: sets the login cookie, then goes to the provider",
    parameters=[
        _PROVIDER_PARAM,
        {"in": "query", "name": "ticket", "required": True, "schema": {"type": "string"}},
    ],
    responses={302: {"description": "To the provider's login page"}, **errors(400, 404, 429)},
)
async def link_start(request: web.Request) -> web.StreamResponse:
    """The browser side of a link started by an API call."""
    await rate_limit(request, None)
    request.app[OIDC].provider(request.match_info["provider"])
    url, browser = await request.app[OIDC].take_ticket(request.query.get("ticket", ""))
    return _to_provider(request, url, browser)


@docs(
    tags=["auth"],
    summary="Finish linking a provider: the callback's link code, with the token of the "
    "account that started the link",
    description="A code started by another account, unknown, expired or already used links "
    "nothing (403 or 400); each code works once.",
    parameters=[_PROVIDER_PARAM],
    responses=errors(400, 403, 404, 409, 415, 422),
)
@authenticated(person=True)
@json_schema(LinkCompleteSchema)
@response_schema(IdentitySchema, 201)
async def link_complete(request: web.Request) -> web.Response:
    """Link the identity a link code holds, for the account that started the link only."""
    provider = request.match_info["provider"]
    oidc = request.app[OIDC]
    oidc.provider(provider)  # 404 for an unknown one
    caller = person_id(request)
    record = await oidc.take_link_code(request["json"]["code"])
    if record is None or record["provider"] != provider:
        raise LoginFailed("The link code is unknown, expired or already used; start again.")
    if record["user_id"] != str(caller):
        raise Forbidden("This link was started by another account; nothing was linked.")
    identity = await identity_service.link_identity(
        provider=provider, subject=record["subject"], user_id=caller
    )
    return json_response(IdentitySchema().dump(identity), status=201, headers=NO_STORE)


@docs(
    tags=["auth"],
    summary="Where the provider sends the browser back; finishes the login, or hands a "
    "link code over",
    parameters=[
        _PROVIDER_PARAM,
        *({"in": "query", "name": n, "schema": {"type": "string"}} for n in ("code", "state")),
    ],
    responses={
        200: {
            "description": "Tokens (when the login asked for JSON); for a link, "
            "{link_code, provider}",
        },
        302: {"description": "To the front end, with a one-time ?code= (or ?link_code=)"},
        **errors(400, 404, 409, 429, 503),
    },
)
async def callback(request: web.Request) -> web.StreamResponse:
    """Check state, exchange the code, verify the ID token, find or create the user."""
    await rate_limit(request, None)
    oidc, settings = request.app[OIDC], request.app[SETTINGS]
    provider = request.match_info["provider"]
    oidc.provider(provider)  # 404 for an unknown one, before anything else
    state = await oidc.take_state(
        provider, request.query.get("state"), browser=request.cookies.get(_cookie_name(request))
    )
    if "error" in request.query:
        raise LoginFailed(f"The provider refused the login ({request.query['error'][:80]}).")
    code = request.query.get("code")
    if not code:
        raise LoginFailed("The provider sent no authorization code.")
    answer = await oidc.exchange(provider, code=code, login=state)
    claims = await oidc.verify_id_token(provider, answer["id_token"], nonce=state.nonce)
    claims = await oidc.profile(provider, claims, access_token=answer.get("access_token"))
    if state.link_user is not None:
        # Never linked here: whoever's browser came back may not be who started the link.
        response = await _hand_over_link(
            request, provider, str(claims["sub"]), state.link_user, as_json=state.response == "json"
        )
        response.del_cookie(_cookie_name(request), **_cookie_attributes(request))
        return response
    user, _created = await identity_service.login_with_identity(provider=provider, claims=claims)
    if user.disabled_at is not None:
        raise LoginFailed("This account is disabled.")
    if state.response == "json" or not settings.frontend_url:
        pair = await token_service.user_tokens(
            tokens=request.app[TOKENS],
            user=user,
            scope=None,
            refresh_ttl=settings.refresh_token_ttl,
        )
        response = json_response(token_body(pair), headers=NO_STORE)
    else:
        one_time = await oidc.issue_code(user_id=str(user.id))
        target = add_params_to_uri(settings.frontend_url, {"code": one_time})
        response = web.Response(status=302, headers={"Location": target, **NO_STORE})
    response.del_cookie(_cookie_name(request), **_cookie_attributes(request))
    return response


async def _hand_over_link(
    request: web.Request, provider: str, subject: str, link_user: str, *, as_json: bool
) -> web.Response:
    """The one-time link code, as JSON or on the way to the front end."""
    code = await request.app[OIDC].issue_link_code(
        provider=provider, subject=subject, user_id=link_user
    )
    settings = request.app[SETTINGS]
    if as_json or not settings.frontend_url:
        body = LinkCodeSchema().dump({"link_code": code, "provider": provider})
        return json_response(body, headers=NO_STORE)
    target = add_params_to_uri(settings.frontend_url, {"link_code": code, "provider": provider})
    return web.Response(status=302, headers={"Location": target, **NO_STORE})


@docs(tags=["users"], summary="The providers linked to your account")
@authenticated(person=True)
@response_schema(IdentityListSchema, 200)
async def my_identities(request: web.Request) -> web.Response:
    """The caller's linked identities, oldest first."""
    user = await user_service.active_user(user_id=person_id(request))
    assert user.id is not None
    linked = await identity_service.identities_of(user_id=user.id)
    return json_response(IdentityListSchema().dump({"items": linked}), headers=NO_STORE)


@docs(
    tags=["users"],
    summary="Remove a provider from your account",
    description="Refused (409) when it is the account's only way to log in: no password and "
    "no other provider.",
    parameters=[_PROVIDER_PARAM],
    responses={204: {"description": "Removed"}, **errors(404, 409)},
)
@authenticated(person=True)
async def unlink_identity(request: web.Request) -> web.Response:
    """Remove the caller's link to a provider."""
    user = await user_service.active_user(user_id=person_id(request))
    await identity_service.unlink_identity(user=user, provider=request.match_info["provider"])
    log.info(
        "identity unlinked",
        extra={"user_id": str(user.id), "provider": request.match_info["provider"]},
    )
    return web.Response(status=204)
