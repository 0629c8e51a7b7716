"""Third-party login (OpenID Connect authorization code flow with PKCE) and linking."""

from __future__ import annotations

from aiohttp import web
from authlib.common.urls import add_params_to_uri

from api.appkeys import OIDC, SETTINGS, TOKENS
from api.handlers import person_id
from api.handlers.auth import NO_STORE, rate_limit, token_body
from api.http import authenticated, docs, errors, json_response
from core.oidc import LoginFailed
from core.services import identities as identity_service
from core.services import tokens as token_service

_RESPONSE_PARAM = {
    "in": "query",
    "name": "response",
    "schema": {"type": "string", "enum": ["redirect", "json"], "default": "redirect"},
    "description": "How the callback hands over tokens: JSON, or a redirect to the front end "
    "with a one-time code for POST /auth/token (grant_type=authorization_code).",
}
_PROVIDER_PARAM = {"in": "path", "name": "provider", "required": True, "schema": {"type": "string"}}


def _redirect_uri(request: web.Request, provider: str) -> str:
    base = request.app[SETTINGS].public_url or f"{request.scheme}://{request.host}"
    path = request.app.router["oidc_callback"].url_for(provider=provider)
    return base.rstrip("/") + str(path)


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
    url = await request.app[OIDC].authorization_url(
        provider,
        redirect_uri=_redirect_uri(request, provider),
        response=_response_mode(request),
    )
    return web.Response(status=302, headers={"Location": url, **NO_STORE})


@docs(
    tags=["auth"],
    summary="Link another provider to your account: returns the URL to send the browser to",
    parameters=[_PROVIDER_PARAM, _RESPONSE_PARAM],
    responses={200: {"description": "{authorization_url}"}, **errors(400, 404, 503)},
)
@authenticated()
async def link(request: web.Request) -> web.Response:
    """Start a login that links the provider's identity to the caller."""
    provider = request.match_info["provider"]
    url = await request.app[OIDC].authorization_url(
        provider,
        redirect_uri=_redirect_uri(request, provider),
        response=_response_mode(request),
        link_user=str(person_id(request)),
    )
    return json_response({"authorization_url": url}, headers=NO_STORE)


@docs(
    tags=["auth"],
    summary="Where the provider sends the browser back; finishes the login",
    parameters=[
        _PROVIDER_PARAM,
        *({"in": "query", "name": n, "schema": {"type": "string"}} for n in ("code", "state")),
    ],
    responses={
        200: {"description": "Tokens (when the login asked for JSON)"},
        302: {"description": "To the front end, with a one-time ?code="},
        **errors(400, 404, 409, 429, 503),
    },
)
async def callback(request: web.Request) -> web.StreamResponse:
    """Check state, exchange the code, verify the ID token, find or create the user."""
    await rate_limit(request, None)
    oidc, settings = request.app[OIDC], request.app[SETTINGS]
    provider = request.match_info["provider"]
    oidc.provider(provider)  # 404 for an unknown one, before anything else
    state = await oidc.take_state(provider, request.query.get("state"))
    if "error" in request.query:
        raise LoginFailed(f"The provider refused the login ({request.query['error'][:80]}).")
    code = request.query.get("code")
    if not code:
        raise LoginFailed("The provider sent no authorization code.")
    answer = await oidc.exchange(provider, code=code, login=state)
    claims = await oidc.verify_id_token(provider, answer["id_token"], nonce=state.nonce)
    user, _created = await identity_service.login_with_identity(
        provider=provider, claims=claims, link_user=state.link_user
    )
    if state.response == "json" or not settings.frontend_url:
        pair = await token_service.user_tokens(
            tokens=request.app[TOKENS],
            user=user,
            scope=None,
            refresh_ttl=settings.refresh_token_ttl,
        )
        return json_response(token_body(pair), headers=NO_STORE)
    one_time = await oidc.issue_code(user_id=str(user.id))
    target = add_params_to_uri(settings.frontend_url, {"code": one_time})
    return web.Response(status=302, headers={"Location": target, **NO_STORE})
