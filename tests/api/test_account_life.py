"""Accounts over their whole life: deleting one's own account, admins disabling, enabling,
promoting, demoting and deleting accounts, and revoking operator clients; each audited."""

from __future__ import annotations

import logging
import time

from bson import ObjectId

from api.appkeys import TOKENS
from core import summaries
from core.services import tokens
from tests.conftest import API, PASSWORD, eventually


async def _exact() -> bool:
    """Every movie summary and user stat equals a recomputation (what verify-summaries does)."""
    for target in (summaries.MOVIES, summaries.USERS):
        _, differences = await summaries.verify(target, prior_votes=10)
        if differences:
            return False
    return not (await summaries.orphans()).ids


async def _rated(api, db, user, movies, score=4.0) -> None:
    for movie in movies:
        await api.rate(user, movie["id"], score)


async def test_a_person_deletes_their_account_and_the_summaries_heal(api, client, db):
    admin = await api.user("root", admin=True)
    movies = [await api.movie(admin, title=f"Film {i}") for i in range(3)]
    leaving, staying = await api.user("leaving"), await api.user("staying")
    await _rated(api, db, leaving, movies, 5.0)
    await _rated(api, db, staying, movies[:1], 2.0)
    await eventually(_exact)

    wrong = await client.delete(
        f"{API}/users/me", json={"current_password": "not the password"}, headers=leaving["auth"]
    )
    assert wrong.status == 422
    assert await db.users.count_documents({"username": "leaving"}) == 1

    gone = await client.delete(
        f"{API}/users/me", json={"current_password": PASSWORD}, headers=leaving["auth"]
    )
    assert gone.status == 204
    user_id = ObjectId(leaving["id"])
    assert await db.users.count_documents({"_id": user_id}) == 0
    assert await db.ratings.count_documents({"user_id": user_id}) == 0
    assert await db.refresh_tokens.count_documents({"user_id": user_id}) == 0
    assert (await client.get(f"{API}/users/me", headers=leaving["auth"])).status == 401
    mine = await client.get(f"{API}/users/me/ratings", headers=leaving["auth"])
    assert mine.status == 401  # the token outlived its account
    refresh = await client.post(
        f"{API}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": leaving["tokens"]["refresh_token"]},
    )
    assert refresh.status == 400

    async def healed() -> bool:
        first = await db.movies.find_one({"_id": ObjectId(movies[0]["id"])})
        return first["rating"]["count"] == 1 and await _exact()

    await eventually(healed)
    # The name stays taken for a while.
    again = await client.post(
        f"{API}/users",
        json={
            "username": "leaving",
            "email": "new@example.com",
            "display_name": "New",
            "password": PASSWORD,
        },
    )
    assert again.status == 409


async def test_an_account_without_a_password_is_deleted_from_a_fresh_provider_login(client, db):
    user_id = (
        await db.users.insert_one(
            {"username": "oidc-only", "display_name": "O", "password_hash": None, "role": "user"}
        )
    ).inserted_id
    issue = client.app[TOKENS].issue
    stale = issue(subject=str(user_id), scopes=["ratings:write"], auth_time=int(time.time()) - 3600)
    refreshed = issue(subject=str(user_id), scopes=["ratings:write"])  # no auth_time
    for token in (stale, refreshed):
        resp = await client.delete(
            f"{API}/users/me", json={}, headers={"Authorization": f"Bearer {token}"}
        )
        assert resp.status == 403
    fresh = issue(subject=str(user_id), scopes=["ratings:write"], auth_time=int(time.time()))
    resp = await client.delete(
        f"{API}/users/me", json={}, headers={"Authorization": f"Bearer {fresh}"}
    )
    assert resp.status == 204
    assert await db.users.count_documents({}) == 0


async def test_admins_disable_enable_promote_demote_and_delete_with_an_audit_trail(
    api, client, db, caplog
):
    caplog.set_level(logging.INFO, logger="audit")
    admin = await api.user("root", admin=True)
    target = await api.user("target")
    url = f"{API}/users/{target['id']}"
    # A plain user cannot.
    assert (await client.post(f"{url}/disable", headers=target["auth"])).status == 403

    disabled = await client.post(f"{url}/disable", headers=admin["auth"])
    assert disabled.status == 200 and (await disabled.json())["disabled_at"]
    assert (await client.get(f"{API}/users/me", headers=target["auth"])).status == 401
    links = await client.get(f"{API}/users/me/identities", headers=target["auth"])
    assert links.status == 401
    login = await client.post(
        f"{API}/auth/token",
        data={"grant_type": "password", "username": "target", "password": PASSWORD},
    )
    assert login.status == 400 and "disabled" in (await login.json())["error_description"]
    refresh = await client.post(
        f"{API}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": target["tokens"]["refresh_token"]},
    )
    assert refresh.status == 400

    enabled = await client.post(f"{url}/enable", headers=admin["auth"])
    assert enabled.status == 200 and (await enabled.json())["disabled_at"] is None
    fresh = await api.login("target")

    promoted = await client.put(f"{url}/role", json={"role": "admin"}, headers=admin["auth"])
    assert (await promoted.json())["role"] == "admin"
    assert "users:admin" in (await api.login("target"))["scope"]
    demoted = await client.put(f"{url}/role", json={"role": "user"}, headers=admin["auth"])
    assert (await demoted.json())["role"] == "user"
    ended = await client.post(
        f"{API}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]},
    )
    assert ended.status == 400  # a demotion ends the sessions that held admin scopes

    assert (await client.delete(url, headers=admin["auth"])).status == 204
    assert (await client.delete(url, headers=admin["auth"])).status == 404
    assert await db.users.count_documents({"username": "target"}) == 0

    trail = [
        (r.getMessage(), r.actor, r.user_id)  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "audit"
    ]
    who = f"user:{admin['id']}"
    assert trail == [
        ("user disabled", who, target["id"]),
        ("user enabled", who, target["id"]),
        ("user role changed", who, target["id"]),
        ("user role changed", who, target["id"]),
        ("user deleted", who, target["id"]),
    ]


async def test_a_revoked_clients_tokens_fail_at_once(api, client, db):
    admin = await api.user("root", admin=True)
    registered, secret = await tokens.create_client(name="importer", scopes=["movies:write"])
    grant = {
        "grant_type": "client_credentials",
        "client_id": registered.client_id,
        "client_secret": secret,
    }
    token = (await (await client.post(f"{API}/auth/token", data=grant)).json())["access_token"]
    as_client = {"Authorization": f"Bearer {token}"}
    body = {"title": "By a script", "year": 2001, "genres": []}
    assert (await client.post(f"{API}/movies", json=body, headers=as_client)).status == 201

    listed = await (await client.get(f"{API}/clients", headers=admin["auth"])).json()
    assert [(c["client_id"], c["revoked_at"]) for c in listed["items"]] == [
        (registered.client_id, None)
    ]
    assert "secret_hash" not in listed["items"][0]
    revoked = await client.delete(f"{API}/clients/{registered.client_id}", headers=admin["auth"])
    assert revoked.status == 200 and (await revoked.json())["revoked_at"]

    refused = await client.post(f"{API}/movies", json=body, headers=as_client)
    assert refused.status == 401
    again = await client.post(f"{API}/auth/token", data=grant)
    assert again.status == 401
    assert await db.movies.count_documents({}) == 1
    missing = await client.delete(f"{API}/clients/mr_{'0' * 16}", headers=admin["auth"])
    assert missing.status == 404
