"""The token endpoint and bearer verification."""

from __future__ import annotations

import base64
import json
import time

from joserfc import jwt
from joserfc.jwk import ECKey

from tests.conftest import API, PASSWORD


async def _token(client, **form):
    return await client.post(f"{API}/auth/token", data=form)


async def test_password_grant_issues_rfc6749_tokens(api, client):
    await api.user("alice")
    resp = await _token(client, grant_type="password", username="alice", password=PASSWORD)
    assert resp.status == 200
    assert resp.headers["Cache-Control"] == "no-store"
    body = await resp.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token", "scope"}
    assert body["token_type"] == "Bearer" and 0 < body["expires_in"] <= 900
    assert body["scope"] == "ratings:write"
    header = json.loads(base64.urlsafe_b64decode(body["access_token"].split(".")[0] + "=="))
    assert header["alg"] == "ES256" and header["kid"]
    me = await client.get(
        f"{API}/users/me", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.status == 200


async def test_wrong_password_and_unknown_user_are_invalid_grant(api, client):
    await api.user("alice")
    for username, password in [("alice", "wrong password!"), ("nobody", PASSWORD)]:
        resp = await _token(client, grant_type="password", username=username, password=password)
        assert resp.status == 400
        assert (await resp.json())["error"] == "invalid_grant"


async def test_token_request_errors(client, db):
    cases = [
        ({"grant_type": "magic"}, "unsupported_grant_type"),
        ({}, "invalid_request"),
        ({"grant_type": "password", "username": "x"}, "invalid_request"),
        ({"grant_type": "refresh_token"}, "invalid_request"),
    ]
    for form, error in cases:
        resp = await _token(client, **form)
        assert resp.status == 400
        assert (await resp.json())["error"] == error
    resp = await client.post(f"{API}/auth/token", json={"grant_type": "password"})
    assert resp.status == 400
    assert (await resp.json())["error"] == "invalid_request"


async def test_admin_scopes_and_scope_narrowing(api, client):
    await api.user("root", admin=True)
    full = await api.login("root")
    assert set(full["scope"].split()) == {
        "ratings:write",
        "movies:write",
        "imports:write",
        "users:admin",
    }
    resp = await _token(
        client, grant_type="password", username="root", password=PASSWORD, scope="ratings:write"
    )
    assert (await resp.json())["scope"] == "ratings:write"
    await api.user("plain")
    resp = await _token(
        client, grant_type="password", username="plain", password=PASSWORD, scope="movies:write"
    )
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_scope"


async def test_refresh_rotates_and_reuse_revokes_the_family(api, client):
    alice = await api.user("alice")
    first = alice["tokens"]["refresh_token"]
    resp = await _token(client, grant_type="refresh_token", refresh_token=first)
    assert resp.status == 200
    second = (await resp.json())["refresh_token"]
    assert second != first
    # Replaying the used token is treated as theft: it fails and kills the newer one too.
    resp = await _token(client, grant_type="refresh_token", refresh_token=first)
    assert (await resp.json())["error"] == "invalid_grant"
    resp = await _token(client, grant_type="refresh_token", refresh_token=second)
    assert resp.status == 400 and (await resp.json())["error"] == "invalid_grant"
    resp = await _token(client, grant_type="refresh_token", refresh_token="made-up")
    assert (await resp.json())["error"] == "invalid_grant"


def _forge(settings, claims, *, key=None, alg="ES256", kid=None):
    now = int(time.time())
    base = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "sub": "x",
        "iat": now,
        "exp": now + 60,
        "scope": "ratings:write",
    }
    base.update(claims)
    key = key or ECKey.generate_key("P-256")
    return jwt.encode({"alg": alg, "kid": kid or key.kid}, base, key)


def _real_key(settings):
    from core.security import load_keyset

    return load_keyset(settings).keys[0]


async def test_bearer_checks_signature_expiry_issuer_audience(api, client, settings):
    alice = await api.user("alice")
    key = _real_key(settings)
    sub = {"sub": alice["id"]}
    assert (
        await client.get(
            f"{API}/users/me", headers={"Authorization": f"Bearer {_forge(settings, sub, key=key)}"}
        )
    ).status == 200
    bad = {
        "expired": _forge(settings, {**sub, "exp": int(time.time()) - 60}, key=key),
        "other audience": _forge(settings, {**sub, "aud": "someone-else"}, key=key),
        "other issuer": _forge(settings, {**sub, "iss": "evil"}, key=key),
        "foreign key": _forge(settings, sub, kid=key.kid),
        "alg none": _alg_none(settings, sub),
        "tampered": _tamper(_forge(settings, sub, key=key)),
    }
    for name, token in bad.items():
        resp = await client.get(f"{API}/users/me", headers={"Authorization": f"Bearer {token}"})
        assert resp.status == 401, name
        assert resp.content_type == "application/problem+json"


def _alg_none(settings, claims):
    def b64(data):
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload = {
        "iss": settings.token_issuer,
        "aud": settings.token_audience,
        "iat": now,
        "exp": now + 60,
        "scope": "ratings:write",
        **claims,
    }
    return f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(payload)}."


def _tamper(token):
    head, payload, sig = token.split(".")
    return f"{head}.{payload[:-2]}AA.{sig}"
