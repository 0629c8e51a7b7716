"""Providers that follow OIDC Core §5.4 put only the protocol claims in the ID token and serve
the profile from UserInfo: a minimal such provider on loopback, and a browser through it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from authlib.common.urls import add_params_to_uri
from joserfc import jwt
from joserfc.jwk import RSAKey

from api.app import create_app
from core import processes
from core.settings import OIDCProvider
from tests.conftest import API

CLIENT_ID, CLIENT_SECRET = "movie-ratings", "loopback-secret"


@dataclass
class BareProvider:
    """Logs in one fixed person without asking; ID tokens carry no profile claims."""

    key: RSAKey = field(default_factory=lambda: RSAKey.generate_key(2048, {"kid": "k1"}))
    subject: str = "person-42"
    userinfo_subject: str = "person-42"
    codes: dict[str, str] = field(default_factory=dict)
    userinfo_calls: int = 0
    issuer: str = ""

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/.well-known/openid-configuration", self.discovery)
        app.router.add_get("/jwks", self.jwks)
        app.router.add_get("/authorize", self.authorize)
        app.router.add_post("/token", self.token)
        app.router.add_get("/userinfo", self.userinfo)
        return app

    async def discovery(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{self.issuer}/authorize",
                "token_endpoint": f"{self.issuer}/token",
                "userinfo_endpoint": f"{self.issuer}/userinfo",
                "jwks_uri": f"{self.issuer}/jwks",
                "id_token_signing_alg_values_supported": ["RS256"],
            }
        )

    async def jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [self.key.as_dict(private=False)]})

    async def authorize(self, request: web.Request) -> web.Response:
        code = f"code-{len(self.codes)}"
        self.codes[code] = request.query["nonce"]
        back = add_params_to_uri(
            request.query["redirect_uri"], {"code": code, "state": request.query["state"]}
        )
        raise web.HTTPFound(back)

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        nonce = self.codes.pop(str(form["code"]))
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": self.subject,
            "aud": CLIENT_ID,
            "exp": now + 300,
            "iat": now,
            "nonce": nonce,
        }
        id_token = jwt.encode({"alg": "RS256", "kid": "k1"}, claims, self.key)
        return web.json_response(
            {"id_token": id_token, "access_token": "at-" + nonce, "token_type": "Bearer"}
        )

    async def userinfo(self, request: web.Request) -> web.Response:
        assert request.headers["Authorization"].startswith("Bearer at-")
        self.userinfo_calls += 1
        return web.json_response(
            {
                "sub": self.userinfo_subject,
                "email": "ada@example.org",
                "email_verified": True,
                "name": "Ada Lovelace\u202e" + "x" * 100,
                "preferred_username": "ada",
            }
        )


async def _login(aiohttp_client, settings, provider: BareProvider) -> tuple[Any, Any]:
    server = TestServer(provider.app(), host="127.0.0.1", port=processes.free_port())
    await server.start_server()
    provider.issuer = str(server.make_url("")).rstrip("/")
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    configured = OIDCProvider(
        name="bare", issuer=provider.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET
    )
    app_settings = settings.model_copy(
        update={"oidc_providers": [configured], "public_url": base, "frontend_url": None}
    )
    client = await aiohttp_client(create_app(app_settings), server_kwargs={"port": port})
    jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[base])
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        resp = await browser.get(f"{base}{API}/auth/login/bare?response=json")
        body = await resp.json(content_type=None)
    await server.close()
    return client, (resp.status, body)


async def test_profile_claims_come_from_userinfo(aiohttp_client, settings, db):
    provider = BareProvider()
    client, (status, tokens) = await _login(aiohttp_client, settings, provider)
    assert status == 200, tokens
    assert provider.userinfo_calls == 1
    me = await client.get(
        f"{API}/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    account = await me.json()
    assert account["username"] == "ada" and account["email"] == "ada@example.org"
    # The provider's name is held to the same rules as a typed one: no bidi override, and
    # the same 64-character limit local sign-up has.
    assert account["display_name"].startswith("Ada Lovelace")
    assert "\u202e" not in account["display_name"] and len(account["display_name"]) == 64


async def test_userinfo_about_another_subject_is_refused(aiohttp_client, settings, db):
    provider = BareProvider(userinfo_subject="someone-else")
    _client, (status, problem) = await _login(aiohttp_client, settings, provider)
    assert status == 400 and "UserInfo" in problem["detail"]
    assert await db.users.count_documents({}) == 0
    assert await db.identities.count_documents({}) == 0
