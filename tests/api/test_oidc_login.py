"""Third-party login end to end against a real OpenID Connect provider on loopback.

The provider is Canaille, started by pytest-iam in a thread on a free port; this API
registers itself there as a client through the provider's dynamic registration endpoint
(RFC 7591), exactly as an operator would register it by hand. A "browser" (an aiohttp
session with a cookie jar) follows the redirects between the API and the provider.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient
from authlib.common.security import generate_token
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from joserfc.jwk import KeySet, RSAKey
from pydantic import SecretStr
from yarl import URL

from api.app import create_app
from api.appkeys import OIDC, SETTINGS
from core import processes
from core.oidc import LoginFailed, OIDCClient
from core.settings import OIDCProvider
from tests.conftest import API, Api

FRONTEND = "http://127.0.0.1:9/app"  # never fetched: the test reads the redirect itself


@dataclass
class Loopback:
    client: TestClient
    base: str
    api: Api
    iam: Any
    provider: OIDCProvider
    redis: Any
    db: Any
    prefix: str

    def browser(self) -> aiohttp.ClientSession:
        """A browser: keeps cookies, and treats the loopback API as a secure origin, as real
        browsers treat http://127.0.0.1."""
        jar = aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[self.base])
        return aiohttp.ClientSession(cookie_jar=jar)

    async def follow(
        self,
        url: str,
        *,
        until: str | None = None,
        browser: aiohttp.ClientSession | None = None,
    ) -> aiohttp.ClientResponse:
        """Follow redirects like a browser (a fresh one unless given); stop before fetching a
        URL starting with `until`."""
        if browser is None:
            async with self.browser() as fresh:
                return await self.follow(url, until=until, browser=fresh)
        for _ in range(10):
            resp = await browser.get(url, allow_redirects=False)
            await resp.read()
            if resp.status not in (301, 302, 303, 307):
                return resp
            url = str(resp.url.join(URL(resp.headers["Location"])))
            if until and url.startswith(until):
                resp.stop_url = url  # type: ignore[attr-defined]
                return resp
        raise AssertionError("too many redirects")

    async def callback_url(self, login_path: str, browser: aiohttp.ClientSession) -> str:
        """Run the flow in `browser` up to the moment the provider sends it back to us."""
        resp = await self.follow(
            self.base + login_path, until=f"{self.base}{API}/auth/callback", browser=browser
        )
        return resp.stop_url  # type: ignore[attr-defined]

    async def counts(self) -> tuple[int, int]:
        return (
            await self.db.users.count_documents({}),
            await self.db.identities.count_documents({}),
        )


async def register_client(iam: Any, redirect_uri: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(iam.url + ".well-known/openid-configuration") as resp:
            discovery = await resp.json()
        async with session.post(
            discovery["registration_endpoint"],
            json={
                "client_name": "movie-ratings",
                "redirect_uris": [redirect_uri],
                "grant_types": ["authorization_code"],
                "response_types": ["code"],
                "token_endpoint_auth_method": "client_secret_basic",
                "scope": "openid email profile",
            },
        ) as resp:
            assert resp.status == 201, await resp.text()
            return {**await resp.json(), "issuer": discovery["issuer"], "discovery": discovery}


@pytest.fixture
async def loopback(aiohttp_client, settings, db, redis, iam_server) -> Loopback:
    port = processes.free_port()
    base = f"http://127.0.0.1:{port}"
    registered = await register_client(iam_server, f"{base}{API}/auth/callback/loopback")
    provider = OIDCProvider(
        name="loopback",
        issuer=registered["issuer"],
        client_id=registered["client_id"],
        client_secret=registered["client_secret"],
    )
    app_settings = settings.model_copy(
        update={"oidc_providers": [provider], "public_url": base, "frontend_url": FRONTEND}
    )
    client = await aiohttp_client(create_app(app_settings), server_kwargs={"port": port})
    iam_server.logout()
    return Loopback(
        client, base, Api(client, db), iam_server, provider, redis, db, f"{settings.mongodb_db}:"
    )


def person(iam: Any, **fields: Any) -> Any:
    user = iam.random_user(**fields)
    iam.login(user)
    iam.consent(user)
    return user


async def test_a_person_logs_in_rates_a_movie_and_sees_it_on_their_profile(loopback):
    admin = await loopback.api.user("root", admin=True)
    movie = await loopback.api.movie(admin, title="Arrival")
    someone = person(loopback.iam)
    resp = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback?response=json")
    assert resp.status == 200, await resp.text()
    tokens = await resp.json()
    assert tokens["token_type"] == "Bearer" and tokens["scope"] == "ratings:write"
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    client = loopback.client
    rated = await client.put(
        f"{API}/movies/{movie['id']}/rating", json={"score": 4.5}, headers=auth
    )
    assert rated.status == 201
    profile = await (await client.get(f"{API}/users/me/ratings", headers=auth)).json()
    assert [(i["movie"]["title"], i["score"]) for i in profile["items"]] == [("Arrival", 4.5)]
    me = await (await client.get(f"{API}/users/me", headers=auth)).json()
    identity = await loopback.db.identities.find_one({})
    assert identity["_id"] == f"loopback|{identity['subject']}"
    assert str(identity["user_id"]) == me["id"]
    assert me["username"]  # derived from the provider's claims
    stored = await loopback.db.users.find_one({"_id": identity["user_id"]})
    assert stored["password_hash"] is None  # cannot log in locally

    # The same person again: the same account, nothing new.
    before = await loopback.counts()
    again = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback?response=json")
    assert again.status == 200
    assert await loopback.counts() == before
    assert someone is not None


async def test_browser_flow_hands_a_one_time_code_to_the_front_end(loopback):
    person(loopback.iam)
    resp = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback", until=FRONTEND)
    landing = resp.stop_url  # type: ignore[attr-defined]
    query = parse_qs(urlsplit(landing).query)
    assert set(query) == {"code"}  # no token in the URL
    code = query["code"][0]
    form = {"grant_type": "authorization_code", "code": code}
    first = await loopback.client.post(f"{API}/auth/token", data=form)
    assert first.status == 200 and "refresh_token" in await first.json()
    replay = await loopback.client.post(f"{API}/auth/token", data=form)
    assert replay.status == 400 and (await replay.json())["error"] == "invalid_grant"


async def test_a_logged_in_user_links_a_provider_and_email_never_links(loopback):
    local = await loopback.api.user("linker")
    # The provider's person has the local account's email, verified or not: no link by email.
    stranger = person(loopback.iam, emails=["linker@example.com"])
    resp = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback?response=json")
    tokens = await resp.json()
    me = await (
        await loopback.client.get(
            f"{API}/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
        )
    ).json()
    assert me["id"] != local["id"]
    assert me.get("email") in (None, "")  # the address belongs to another account

    # Now a different provider person is linked to the local account on purpose.
    await loopback.db.identities.delete_many({})
    loopback.iam.logout()
    person(loopback.iam)
    code = await _link_code(loopback, local)
    assert await loopback.db.identities.count_documents({}) == 0  # not before completion
    done = await loopback.client.post(
        f"{API}/auth/link/loopback/complete", json={"code": code}, headers=local["auth"]
    )
    assert done.status == 201, await done.text()
    assert (await done.json())["provider"] == "loopback"
    identity = await loopback.db.identities.find_one({})
    assert str(identity["user_id"]) == local["id"]
    again = await loopback.client.post(
        f"{API}/auth/link/loopback/complete", json={"code": code}, headers=local["auth"]
    )
    assert "already used" in (await _problem(again, 400))["detail"]
    # Logging in through the provider now opens the local account.
    plain = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback?response=json")
    claims = orjson.loads(
        base64.urlsafe_b64decode((await plain.json())["access_token"].split(".")[1] + "==")
    )
    assert claims["sub"] == local["id"]
    assert stranger is not None

    # The account lists its link and removes it (it still has its password).
    listed = await loopback.client.get(f"{API}/users/me/identities", headers=local["auth"])
    assert [i["provider"] for i in (await listed.json())["items"]] == ["loopback"]
    removed = await loopback.client.delete(
        f"{API}/users/me/identities/loopback", headers=local["auth"]
    )
    assert removed.status == 204
    assert await loopback.db.identities.count_documents({"user_id": identity["user_id"]}) == 0
    gone = await loopback.client.delete(
        f"{API}/users/me/identities/loopback", headers=local["auth"]
    )
    await _problem(gone, 404)


async def _link_code(
    loopback: Loopback, account: dict[str, Any], browser: aiohttp.ClientSession | None = None
) -> str:
    """Start a link for `account` and run it in `browser`; the link code it is handed."""
    started = await loopback.client.post(
        f"{API}/auth/link/loopback?response=json", headers=account["auth"]
    )
    assert started.status == 200
    handed = await loopback.follow((await started.json())["authorization_url"], browser=browser)
    assert handed.status == 200, await handed.text()
    body = await handed.json()
    assert set(body) == {"link_code", "provider"}  # no tokens: the browser logs nobody in
    return str(body["link_code"])


async def test_only_the_account_that_started_a_link_completes_it(loopback):
    """Bob starts a link and sends its URL to Alice; she opens it in her browser and signs in
    at the provider as herself. The code lands in her browser; completed under her account
    (or none) it links nothing. Only Bob's own run, completed with Bob's token, links."""
    bob, alice = await loopback.api.user("bob"), await loopback.api.user("alice")
    person(loopback.iam)
    async with loopback.browser() as alices_browser:
        code = await _link_code(loopback, bob, alices_browser)
    url = f"{API}/auth/link/loopback/complete"
    anonymous = await loopback.client.post(url, json={"code": code})
    assert anonymous.status == 401
    under_alice = await loopback.client.post(url, json={"code": code}, headers=alice["auth"])
    assert "another account" in (await _problem(under_alice, 403))["detail"]
    # Spent by that attempt: Bob cannot complete a link he did not run himself either.
    late = await loopback.client.post(url, json={"code": code}, headers=bob["auth"])
    await _problem(late, 400)
    assert await loopback.db.identities.count_documents({}) == 0

    async with loopback.browser() as bobs_browser:
        code = await _link_code(loopback, bob, bobs_browser)
    wrong_provider = await loopback.client.post(
        f"{API}/auth/link/nope/complete", json={"code": code}, headers=bob["auth"]
    )
    await _problem(wrong_provider, 404)
    done = await loopback.client.post(url, json={"code": code}, headers=bob["auth"])
    assert done.status == 201
    linked = await loopback.db.identities.find({}).to_list(None)
    assert [str(i["user_id"]) for i in linked] == [bob["id"]]


async def test_a_link_in_the_browser_hands_its_code_to_the_front_end(loopback):
    account = await loopback.api.user("framed")
    person(loopback.iam)
    started = await loopback.client.post(f"{API}/auth/link/loopback", headers=account["auth"])
    resp = await loopback.follow((await started.json())["authorization_url"], until=FRONTEND)
    query = parse_qs(urlsplit(resp.stop_url).query)  # type: ignore[attr-defined]
    assert set(query) == {"link_code", "provider"}
    assert await loopback.db.identities.count_documents({}) == 0


async def test_the_only_way_to_log_in_cannot_be_unlinked(loopback):
    person(loopback.iam)
    resp = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback?response=json")
    auth = {"Authorization": f"Bearer {(await resp.json())['access_token']}"}
    refused = await loopback.client.delete(f"{API}/users/me/identities/loopback", headers=auth)
    assert "only way to log in" in (await _problem(refused, 409))["detail"]
    assert await loopback.db.identities.count_documents({}) == 1


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    return await resp.json()


async def test_refused_logins_create_nothing(loopback):
    person(loopback.iam)
    before = await loopback.counts()
    client = loopback.client
    login_path = f"{API}/auth/login/loopback?response=json"

    # Unknown provider.
    await _problem(await client.get(f"{API}/auth/login/nope", allow_redirects=False), 404)
    await _problem(await client.get(f"{API}/auth/callback/nope?code=x&state=y"), 404)

    async with loopback.browser() as browser:
        # Wrong state, then a reused one.
        callback = await loopback.callback_url(login_path, browser)
        split = urlsplit(callback)
        query = {k: v[0] for k, v in parse_qs(split.query).items()}
        forged = add_params_to_uri(callback.split("?")[0], {**query, "state": generate_token(32)})
        assert "state" in (await _problem(await browser.get(forged), 400))["detail"]
        # The forged attempt cleared nothing: the real state and cookie still work, once.
        assert (await browser.get(callback)).status == 200
        after_first = await loopback.counts()
        reused = await _problem(await browser.get(callback), 400)
        assert "already used" in reused["detail"] or "browser" in reused["detail"]
        assert await loopback.counts() == after_first
        before = after_first

        # Wrong nonce: the stored login expects another nonce than the provider put in it.
        callback = await loopback.callback_url(login_path, browser)
        state = parse_qs(urlsplit(callback).query)["state"][0]
        key = f"{loopback.prefix}oidc:state:{state}"
        stored = orjson.loads(await loopback.redis.get(key))
        await loopback.redis.set(key, orjson.dumps({**stored, "nonce": "not-the-nonce"}), ex=60)
        bad_nonce = await _problem(await browser.get(callback), 400)
        assert "ID token" in bad_nonce["detail"]

        # The provider refuses the code exchange: this API presents the wrong client secret.
        # (Canaille, the loopback provider, does not refuse a replayed code or a mismatched
        # PKCE verifier for a confidential client, so those cannot be provoked here.)
        callback = await loopback.callback_url(login_path, browser)
        query = {k: v[0] for k, v in parse_qs(urlsplit(callback).query).items()}
        cookie = browser.cookie_jar.filter_cookies(URL(loopback.base))["mr-login"].value
        wrong = loopback.provider.model_copy(update={"client_secret": SecretStr("wrong")})
        wrong_settings = client.app[SETTINGS].model_copy(update={"oidc_providers": [wrong]})
        async with aiohttp.ClientSession() as http:
            misconfigured = OIDCClient(wrong_settings, http, loopback.redis)
            login = await misconfigured.take_state("loopback", query["state"], browser=cookie)
            with pytest.raises(LoginFailed, match="code exchange"):
                await misconfigured.exchange("loopback", code=query["code"], login=login)

        # The provider itself refuses: no session there and prompt=none.
        loopback.iam.logout()
        login = await browser.get(loopback.base + login_path, allow_redirects=False)
        to_provider = add_params_to_uri(login.headers["Location"], {"prompt": "none"})
        resp = await loopback.follow(
            to_provider, until=f"{loopback.base}{API}/auth/callback", browser=browser
        )
        back = resp.stop_url  # type: ignore[attr-defined]
        assert "error" in parse_qs(urlsplit(back).query)
        provider_error = await _problem(await browser.get(back), 400)
        assert "refused the login" in provider_error["detail"]

    assert await loopback.counts() == before


async def test_a_callback_from_another_browser_is_refused_and_creates_nothing(loopback):
    """Login CSRF (RFC 9700 §4.7.1): a flow started in one browser (the attacker's) and
    finished in another (the victim's) logs nobody in and links nothing."""
    victim = await loopback.api.user("victim")
    attacker_account = await loopback.api.user("attacker")
    person(loopback.iam)
    before = await loopback.counts()
    login_path = f"{API}/auth/login/loopback?response=json"
    async with loopback.browser() as attacker, loopback.browser() as other:
        callback = await loopback.callback_url(login_path, attacker)
        refused = await _problem(await other.get(callback), 400)
        assert "browser" in refused["detail"]
        # Without any cookie at all (the API client, as a script would send it) as well.
        callback = await loopback.callback_url(login_path, attacker)
        no_cookie = await loopback.client.get(callback.removeprefix(loopback.base))
        assert "browser" in (await _problem(no_cookie, 400))["detail"]

        # Linking: the attacker starts a link to their own account and sends the provider
        # URL (what the API used to hand out) to the victim: refused, nothing linked.
        started = await loopback.client.post(
            f"{API}/auth/link/loopback?response=json", headers=attacker_account["auth"]
        )
        start_url = (await started.json())["authorization_url"]
        assert start_url.startswith(f"{loopback.base}{API}/auth/link/loopback/start?ticket=")
        to_provider = await attacker.get(start_url, allow_redirects=False)
        assert to_provider.status == 302 and "mr-login" in to_provider.cookies
        resp = await loopback.follow(
            to_provider.headers["Location"], until=f"{loopback.base}{API}/auth/callback",
            browser=other,
        )  # fmt: skip
        refused = await _problem(await other.get(resp.stop_url), 400)  # type: ignore[attr-defined]
        assert "browser" in refused["detail"]
        # The ticket worked once only.
        await _problem(await other.get(start_url, allow_redirects=False), 400)
    assert await loopback.counts() == before
    assert await loopback.db.identities.count_documents({}) == 0
    assert victim["id"]


def basic(client_id: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()


async def _provider_id_token(
    loopback: Loopback, client_id: str, secret: str, redirect: str
) -> tuple[str, str]:
    """A real ID token from the provider, for `client_id`, with a nonce we chose."""
    nonce, verifier = generate_token(32), generate_token(64)
    async with aiohttp.ClientSession() as session:
        async with session.get(loopback.iam.url + ".well-known/openid-configuration") as resp:
            discovery = await resp.json()
    authorize = add_params_to_uri(
        discovery["authorization_endpoint"],
        {
            "response_type": "code",
            "client_id": client_id,
            "redirect_uri": redirect,
            "scope": "openid email profile",
            "state": "s",
            "nonce": nonce,
            "code_challenge": create_s256_code_challenge(verifier),
            "code_challenge_method": "S256",
        },
    )
    back = await loopback.follow(authorize, until=redirect)
    code = parse_qs(urlsplit(back.stop_url).query)["code"][0]  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as session:
        async with session.post(
            discovery["token_endpoint"],
            data={
                "grant_type": "authorization_code",
                "code": code,
                "redirect_uri": redirect,
                "code_verifier": verifier,
            },
            headers={"Authorization": basic(client_id, secret)},
        ) as answer:
            assert answer.status == 200, await answer.text()
            return (await answer.json())["id_token"], nonce


async def _own_id_token(loopback: Loopback) -> tuple[str, str]:
    """A real ID token issued to this API's client, for a logged-in person."""
    person(loopback.iam)
    secret = loopback.provider.client_secret.get_secret_value()
    redirect = f"{loopback.base}{API}/auth/callback/loopback"
    return await _provider_id_token(loopback, loopback.provider.client_id, secret, redirect)


async def test_id_token_checks_with_real_provider_tokens(loopback):
    oidc = loopback.client.app[OIDC]
    token, nonce = await _own_id_token(loopback)
    claims = await oidc.verify_id_token("loopback", token, nonce=nonce)
    assert claims["aud"] in (loopback.provider.client_id, [loopback.provider.client_id])

    with pytest.raises(LoginFailed):  # expired: checked two hours later
        await oidc.verify_id_token("loopback", token, nonce=nonce, now=int(time.time()) + 7200)
    header, payload, signature = token.split(".")
    claims_b = orjson.loads(base64.urlsafe_b64decode(payload + "=="))
    forged = base64.urlsafe_b64encode(orjson.dumps({**claims_b, "sub": "someone-else"}))
    with pytest.raises(LoginFailed):  # tampered payload, original signature
        await oidc.verify_id_token(
            "loopback", f"{header}.{forged.rstrip(b'=').decode()}.{signature}", nonce=nonce
        )
    with pytest.raises(LoginFailed):  # alg none
        unsigned = base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode()
        await oidc.verify_id_token("loopback", f"{unsigned}.{payload}.", nonce=nonce)

    other_redirect = "http://127.0.0.1:9/other"
    other = await register_client(loopback.iam, other_redirect)
    foreign, foreign_nonce = await _provider_id_token(
        loopback, other["client_id"], other["client_secret"], other_redirect
    )
    with pytest.raises(LoginFailed):  # issued to another client
        await oidc.verify_id_token("loopback", foreign, nonce=foreign_nonce)


async def test_an_unknown_kid_fetches_the_providers_keys_again(loopback):
    oidc = loopback.client.app[OIDC]
    token, nonce = await _own_id_token(loopback)
    await oidc.verify_id_token("loopback", token, nonce=nonce)  # keys fetched and cached
    # As if the provider had rotated since: the cached set holds only an old key.
    stale = RSAKey.generate_key(2048, parameters={"kid": "retired"}, private=False)
    oidc._cache["loopback"].keys = KeySet([stale])
    claims = await oidc.verify_id_token("loopback", token, nonce=nonce)
    assert claims["nonce"] == nonce
    assert oidc._cache["loopback"].keys.get_by_kid(jwt_kid(token)) is not None


def jwt_kid(token: str) -> str:
    return orjson.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))["kid"]


async def test_redirect_uris_never_come_from_the_host_header(loopback, aiohttp_client):
    # Development without PUBLIC_URL: the API's own listening address, whatever Host says.
    dev = loopback.client.app[SETTINGS].model_copy(
        update={"environment": "development", "public_url": None, "port": 8123}
    )
    client = await aiohttp_client(create_app(dev))
    resp = await client.get(
        f"{API}/auth/login/loopback",
        headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"},
        allow_redirects=False,
    )
    assert resp.status == 302
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    assert query["redirect_uri"] == [f"http://127.0.0.1:8123{API}/auth/callback/loopback"]


async def test_a_disabled_account_cannot_log_in_through_its_provider(loopback):
    person(loopback.iam)
    first = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback?response=json")
    assert first.status == 200
    from models import utcnow

    await loopback.db.users.update_many({}, {"$set": {"disabled_at": utcnow()}})
    again = await loopback.follow(f"{loopback.base}{API}/auth/login/loopback?response=json")
    assert "disabled" in (await _problem(again, 400))["detail"]
