"""Operator clients, revocation, the JWKS, rate limits, and secrets kept out of logs."""

from __future__ import annotations

import asyncio
import base64
import logging
import subprocess
import sys
from typing import Any

import aiohttp
from joserfc import jwt
from joserfc.jwk import KeySet

from api.app import create_app
from core.logs import JsonFormatter
from tests.conftest import API, PASSWORD, Api
from tests.services import settings_env


def create_client(settings: Any, *scopes: str) -> tuple[str, str]:
    args = [sys.executable, "-m", "api", "create-client", "--name", "nightly import"]
    for scope in scopes:
        args += ["--scope", scope]
    done = subprocess.run(
        args, capture_output=True, text=True, env=settings_env(settings), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    fields = dict(line.split(":", 1) for line in done.stdout.splitlines())
    return fields["client_id"].strip(), fields["client_secret"].strip()


def test_create_client_prints_lines_a_shell_evaluates(settings):
    args = [sys.executable, "-m", "api", "create-client", "--name", "x", "--scope",
            "imports:write", "--shell"]  # fmt: skip
    done = subprocess.run(
        args, capture_output=True, text=True, env=settings_env(settings), timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    shell = subprocess.run(
        ["sh", "-c", done.stdout + 'printf "%s %s" "$CLIENT_ID" "$CLIENT_SECRET"'],
        capture_output=True, text=True, timeout=10, check=True,
    )  # fmt: skip
    client_id, secret = shell.stdout.split(" ")
    assert client_id.startswith("mr_") and len(secret) > 20


def basic(client_id: str, secret: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


async def test_operator_client_gets_exactly_its_scopes(settings, db, client):
    client_id, secret = create_client(settings, "movies:write", "imports:write")
    stored = await db.clients.find_one({"client_id": client_id})
    assert stored["scopes"] == ["movies:write", "imports:write"]
    assert secret not in str(stored)  # kept as a digest only

    resp = await client.post(
        f"{API}/auth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(client_id, secret),
    )
    assert resp.status == 200
    body = await resp.json()
    assert "refresh_token" not in body and body["scope"] == "movies:write imports:write"
    auth = {"Authorization": f"Bearer {body['access_token']}"}
    created = await client.post(f"{API}/movies", json={"title": "Ops"}, headers=auth)
    assert created.status == 201
    movie_id = (await created.json())["id"]
    rated = await client.put(f"{API}/movies/{movie_id}/rating", json={"score": 3}, headers=auth)
    assert rated.status == 403  # a client holds no ratings:write and speaks for no person
    me = await client.get(f"{API}/users/me", headers=auth)
    assert me.status == 403

    narrowed = await client.post(
        f"{API}/auth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": client_id,
            "client_secret": secret,
            "scope": "imports:write",
        },
    )
    assert (await narrowed.json())["scope"] == "imports:write"
    for form, headers in [
        ({"grant_type": "client_credentials"}, basic(client_id, "wrong")),
        ({"grant_type": "client_credentials"}, basic("mr_unknown", secret)),
        ({"grant_type": "client_credentials"}, {"Authorization": "Basic !!!"}),
        ({"grant_type": "client_credentials"}, {}),
    ]:
        refused = await client.post(f"{API}/auth/token", data=form, headers=headers)
        assert refused.status == 401 and (await refused.json())["error"] == "invalid_client"
        assert refused.headers["WWW-Authenticate"].startswith("Basic")
    too_much = await client.post(
        f"{API}/auth/token",
        data={"grant_type": "client_credentials", "scope": "users:admin"},
        headers=basic(client_id, secret),
    )
    assert (await too_much.json())["error"] == "invalid_scope"


def test_a_client_cannot_be_given_a_persons_scope(settings):
    args = [sys.executable, "-m", "api", "create-client", "--name", "x", "--scope", "ratings:write"]
    done = subprocess.run(
        args, capture_output=True, text=True, env=settings_env(settings), timeout=60, check=False
    )
    assert done.returncode == 2 and "refused" in done.stderr


async def test_jwks_publishes_the_public_keys_that_verify_tokens(api, client):
    user = await api.user()
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status == 200
    jwks = await resp.json()
    assert all("d" not in key and key["kid"] for key in jwks["keys"])
    decoded = jwt.decode(user["tokens"]["access_token"], KeySet.import_key_set(jwks))
    assert decoded.claims["sub"] == user["id"]


async def test_revocation_kills_the_refresh_family(api, client):
    user = await api.user()
    refresh = user["tokens"]["refresh_token"]
    resp = await client.post(f"{API}/auth/revoke", data={"token": refresh})
    assert resp.status == 200
    again = await client.post(
        f"{API}/auth/token", data={"grant_type": "refresh_token", "refresh_token": refresh}
    )
    assert again.status == 400 and (await again.json())["error"] == "invalid_grant"
    unknown = await client.post(f"{API}/auth/revoke", data={"token": "never-issued"})
    assert unknown.status == 200  # RFC 7009 §2.2
    access = await client.post(f"{API}/auth/revoke", data={"token": user["tokens"]["access_token"]})
    assert access.status == 400
    assert (await access.json())["error"] == "unsupported_token_type"
    missing = await client.post(f"{API}/auth/revoke", data={})
    assert missing.status == 400 and (await missing.json())["error"] == "invalid_request"


def _from(address: str) -> aiohttp.ClientSession:
    """A client whose connections come from another loopback address (127.0.0.0/8)."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(address, 0)))


async def test_wrong_passwords_are_throttled_per_account_and_address(aiohttp_client, settings, db):
    strict = settings.model_copy(
        update={
            "login_failures_per_pair": 3,
            "login_rate_per_ip": 8,
            "login_checks_per_account": 6,
            "login_rate_window": 600,  # the account's bucket refills one check per 100 s
        }
    )
    client = await aiohttp_client(create_app(strict))
    api = Api(client, db)
    await api.user("victim")  # its registration's login makes 127.0.0.1 a known address
    token_url = str(client.make_url(f"{API}/auth/token"))

    async def attempt(session: Any, username: str, password: str = "wrong password") -> Any:
        form = {"grant_type": "password", "username": username, "password": password}
        resp = await session.post(token_url, data=form)
        await resp.read()
        return resp

    async with _from("127.0.0.2") as attacker, _from("127.0.0.3") as owner:
        # Three wrong guesses from one address: that (account, address) pair is refused...
        statuses = [(await attempt(attacker, "victim")).status for _ in range(4)]
        assert statuses == [400, 400, 400, 429]
        limited = await attempt(attacker, "victim", PASSWORD)
        assert limited.status == 429 and limited.content_type == "application/problem+json"
        assert int(limited.headers["Retry-After"]) >= 1
        # ...but the owner, from another address, is not locked out; a right password is
        # given back, so logging in often is never throttled as guessing.
        for _ in range(4):
            assert (await attempt(owner, "victim", PASSWORD)).status == 200
        # Attempts per address (8, refused ones included) hold for any account.
        others = [(await attempt(attacker, "someone-else")).status for _ in range(4)]
        assert others == [400, 400, 400, 429]


async def test_concurrent_guesses_are_counted_before_they_are_checked(aiohttp_client, settings, db):
    strict = settings.model_copy(update={"login_failures_per_pair": 5, "login_rate_per_ip": 100})
    client = await aiohttp_client(create_app(strict))
    await Api(client, db).user("victim")
    form = {"grant_type": "password", "username": "victim", "password": "wrong password"}
    async with _from("127.0.0.2") as attacker:
        url = str(client.make_url(f"{API}/auth/token"))
        answers = await asyncio.gather(*(attacker.post(url, data=form) for _ in range(20)))
        statuses = sorted(resp.status for resp in answers)
    assert statuses == [400] * 5 + [429] * 15


async def test_guesses_from_many_addresses_spend_the_account_and_not_its_owner(
    aiohttp_client, settings, db
):
    strict = settings.model_copy(
        update={"login_checks_per_account": 4, "login_rate_window": 600, "login_rate_per_ip": 100}
    )
    client = await aiohttp_client(create_app(strict))
    api = Api(client, db)
    await api.user("victim")
    url = str(client.make_url(f"{API}/auth/token"))
    wrong = {"grant_type": "password", "username": "victim", "password": "wrong password"}
    statuses = []
    for n in range(4, 12):  # a botnet: one guess from each of eight addresses
        async with _from(f"127.0.0.{n}") as bot:
            statuses.append((await bot.post(url, data=wrong)).status)
    # The registration's login took one check: three guesses are checked, the rest refused
    # before any password is verified.
    assert statuses == [400] * 3 + [429] * 5
    # The owner's known address does not draw on the empty bucket; an unknown one would.
    right = {**wrong, "password": PASSWORD}
    assert (await client.post(f"{API}/auth/token", data=right)).status == 200
    async with _from("127.0.0.20") as stranger:
        assert (await stranger.post(url, data=right)).status == 429


async def test_no_secret_reaches_the_logs(settings, db, client, api, caplog):
    caplog.set_level(logging.DEBUG)
    client_id, secret = create_client(settings, "movies:write")
    user = await api.user("logcheck")
    tokens = user["tokens"]
    await client.post(
        f"{API}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    # Reusing the rotated token logs a warning about the family: it must not carry the token.
    await client.post(
        f"{API}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    await client.post(
        f"{API}/auth/token",
        data={"grant_type": "password", "username": "logcheck", "password": "not the password"},
    )
    cc = await client.post(
        f"{API}/auth/token", data={"grant_type": "client_credentials"},
        headers=basic(client_id, secret),
    )  # fmt: skip
    client_token = (await cc.json())["access_token"]
    await client.get(f"{API}/users/me", headers=user["auth"])
    await client.post(f"{API}/auth/revoke", data={"token": tokens["refresh_token"]})
    formatter = JsonFormatter()
    logged = "\n".join(formatter.format(r) for r in caplog.records)
    assert logged  # the requests above were logged
    for secret_value in [
        PASSWORD,
        "not the password",
        secret,
        tokens["access_token"],
        tokens["refresh_token"],
        client_token,
    ]:
        assert secret_value not in logged


async def test_a_refresh_token_replayed_in_parallel_leaves_no_live_token(api, client):
    """Reuse revokes the family even when the real client's rotation races the replay: the
    token the winner just got is refused too, whichever write landed first."""
    await api.user("racer")
    form = {"grant_type": "refresh_token"}
    for parallel in (2, 3, 10):
        for _ in range(8):
            refresh = (await api.login("racer"))["refresh_token"]
            answers = await asyncio.gather(
                *(
                    client.post(f"{API}/auth/token", data={**form, "refresh_token": refresh})
                    for _ in range(parallel)
                )
            )
            won = [await r.json() for r in answers if r.status == 200]
            assert len(won) == 1 and sum(r.status == 400 for r in answers) == parallel - 1
            again = await client.post(
                f"{API}/auth/token", data={**form, "refresh_token": won[0]["refresh_token"]}
            )
            assert again.status == 400, (parallel, await again.text())
