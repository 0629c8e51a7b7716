"""Every secured operation in the OpenAPI spec, tried with every kind of bad credential.

Generated from the spec the app serves, so a new route is covered without a new test: each
operation must refuse no token, an expired token, a bad signature, `alg: none` and a token
for another audience with 401, a token without its scope with 403, and must leave every
stored document as it was. A route that mutates without declaring security fails too.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
from typing import Any

import orjson
from joserfc import jwt
from joserfc.jwk import ECKey, KeySet

from core.security import CLIENT_SCOPES, CLIENT_SUBJECT
from tests.conftest import API, eventually

# Mutations anyone may call: registering, and the OAuth2 endpoints (they authenticate
# with their own credentials).
PUBLIC_MUTATIONS = {
    ("post", f"{API}/users"),
    ("post", f"{API}/auth/token"),
    ("post", f"{API}/auth/revoke"),
}


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


class Forger:
    """Tokens signed (or not) in every wrong way, for the subject `sub`."""

    def __init__(self, settings: Any, sub: str) -> None:
        keyset = KeySet.import_key_set(json.loads(settings.token_signing_keys.get_secret_value()))
        self.key = keyset.keys[0]
        self.settings = settings
        self.sub = sub

    def claims(self, **override: Any) -> dict[str, Any]:
        now = int(time.time())
        return {
            "iss": self.settings.token_issuer,
            "aud": self.settings.token_audience,
            "sub": self.sub,
            "iat": now,
            "exp": now + 300,
            "jti": "matrix",
            "scope": "ratings:write movies:write imports:write users:admin",
            **override,
        }

    def sign(self, claims: dict[str, Any], key: Any = None) -> str:
        header = {"alg": "ES256", "kid": self.key.kid, "typ": "at+jwt"}
        return jwt.encode(header, claims, key or self.key)

    def bad_tokens(self) -> dict[str, str]:
        now = int(time.time())
        stranger = ECKey.generate_key("P-256")
        return {
            "expired": self.sign(self.claims(iat=now - 3600, exp=now - 1800)),
            "bad signature": self.sign(self.claims(), key=stranger),
            "alg none": f"{_b64({'alg': 'none', 'kid': self.key.kid})}.{_b64(self.claims())}.",
            "other audience": self.sign(self.claims(aud="someone-else")),
        }

    def without_scope(self) -> str:
        return self.sign(self.claims(scope=""))


async def snapshot(db: Any) -> str:
    """A digest of every stored document (but the workers' bookkeeping: the ticket counter
    and the drain's mark, which a drain moves after storing the summaries it waited for)."""
    digest = hashlib.sha256()
    for name in sorted(set(await db.list_collection_names()) - {"counters", "drain_marks"}):
        async for doc in db[name].find({}).sort("_id", 1):
            digest.update(orjson.dumps(doc, default=str, option=orjson.OPT_SORT_KEYS))
    return digest.hexdigest()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in spec["paths"].items()
        for method, op in item.items()
        if method in {"get", "post", "put", "patch", "delete"}
    ]


def required_scope(op: dict[str, Any]) -> str | None:
    for requirement in op.get("security", []):
        if requirement.get("OAuth2"):
            return requirement["OAuth2"][0]
    return None


async def test_every_secured_operation_refuses_bad_credentials(api, client, db, settings):
    spec = await (await client.get("/api/docs/openapi.json")).json()
    admin = await api.user("root", admin=True)
    victim, other = await api.user("victim"), await api.user("other")
    movie = await api.movie(admin, title="Owned")
    await api.rate(victim, movie["id"], 4.0)

    async def settled() -> bool:  # the worker's aggregation must not move the snapshot
        stored_movie = await db.movies.find_one({"_id": _oid(movie["id"])})
        stored_user = await db.users.find_one({"_id": _oid(victim["id"])})
        return stored_movie["rating"]["count"] == 1 and stored_user["stats"]["count"] == 1

    await eventually(settled)
    values = {
        "movie_id": movie["id"],
        "user_id": victim["id"],
        "import_id": "0" * 24,
        "provider": "any",
        "client_id": "mr_" + "0" * 16,
    }
    # The operator client the forged client tokens below name: tokens of unknown or revoked
    # clients fail before any scope check.
    await db.clients.insert_one(
        {"client_id": "mr_matrix", "name": "matrix", "secret_hash": "-", "scopes": ["users:admin"]}
    )
    forger = Forger(settings, victim["id"])
    bad = forger.bad_tokens()
    no_scope = forger.without_scope()

    secured = 0
    before = await snapshot(db)
    for method, path, op in operations(spec):
        if not op.get("security"):
            assert method == "get" or (method, path) in PUBLIC_MUTATIONS, (
                f"{method.upper()} {path} changes state but declares no security"
            )
            continue
        secured += 1
        url = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], path)
        body = {"json": {}} if method in {"post", "put", "patch"} else {}
        label = f"{method.upper()} {path}"

        resp = await client.request(method, url, **body)
        assert resp.status == 401, f"{label} without a token: {resp.status}"
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        for kind, token in bad.items():
            resp = await client.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, **body
            )
            assert resp.status == 401, f"{label} with {kind} token: {resp.status}"
            assert resp.content_type == "application/problem+json"
        if required_scope(op):
            resp = await client.request(
                method, url, headers={"Authorization": f"Bearer {no_scope}"}, **body
            )
            assert resp.status == 403, f"{label} without its scope: {resp.status}"
    assert secured >= 10  # the spec really lists the secured routes
    assert await snapshot(db) == before, "a refused request changed stored data"

    # Operator clients, with and without each scope. Ids name nothing here, so a client
    # that is let in gets 404 or 422 and changes nothing either.
    client_forger = Forger(settings, f"{CLIENT_SUBJECT}mr_matrix")
    absent = {**values, "movie_id": "0" * 24, "user_id": "0" * 24}
    operator_routes = 0
    for method, path, op in operations(spec):
        if not op.get("security"):
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: absent[m.group(1)], path)
        body = {"json": {}} if method in {"post", "put", "patch"} else {}
        label = f"{method.upper()} {path}"
        scope = required_scope(op)
        for held in CLIENT_SCOPES:
            token = client_forger.sign(client_forger.claims(scope=held))
            resp = await client.request(
                method, url, headers={"Authorization": f"Bearer {token}"}, **body
            )
            if scope is not None and held != scope:
                assert resp.status == 403, f"{label} by a client holding {held}: {resp.status}"
                challenge = resp.headers["WWW-Authenticate"]
                assert f'error="insufficient_scope", scope="{scope}"' in challenge
            elif scope in CLIENT_SCOPES:  # an operator route: the client is let in
                operator_routes += 1
                assert resp.status not in (401, 403, 500), f"{label} by a client: {resp.status}"
            else:  # a route that acts for a person: a client has none to act for
                assert resp.status == 403, f"{label} by a client holding {held}: {resp.status}"
    assert operator_routes >= 5  # movies and imports routes really let clients in
    assert await snapshot(db) == before, "a client's request changed stored data"

    # People: a plain user's valid token is refused on every operator route (403), an
    # admin's is let in (ids name nothing, so nothing changes either).
    operator_routes = 0
    for method, path, op in operations(spec):
        scope = required_scope(op) if op.get("security") else None
        if scope not in CLIENT_SCOPES:
            continue
        url = re.sub(r"\{(\w+)\}", lambda m: absent[m.group(1)], path)
        body = {"json": {}} if method in {"post", "put", "patch"} else {}
        label = f"{method.upper()} {path}"
        resp = await client.request(method, url, headers=other["auth"], **body)
        assert resp.status == 403, f"{label} by a plain user: {resp.status}"
        resp = await client.request(method, url, headers=admin["auth"], **body)
        assert resp.status not in (401, 403, 500), f"{label} by an admin: {resp.status}"
        operator_routes += 1
    assert operator_routes >= 10
    assert await snapshot(db) == before, "a person's refused request changed stored data"

    # Another person's valid token never reaches the victim's rating: it addresses the
    # caller's own (absent) rating, and the victim's stays as it was.
    rating_url = f"{API}/movies/{movie['id']}/rating"
    for method in ("get", "delete"):
        resp = await client.request(method, rating_url, headers=other["auth"])
        assert resp.status == 404, f"{method.upper()} another's rating: {resp.status}"
    stored = await db.ratings.find_one({"movie_id": _oid(movie["id"])})
    assert stored is not None and stored["score"] == 4.0
    assert str(stored["user_id"]) == victim["id"]


def _oid(value: str) -> Any:
    from bson import ObjectId

    return ObjectId(value)
