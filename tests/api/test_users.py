"""Accounts: registration, public and private views, self-service changes."""

from __future__ import annotations

from tests.conftest import API, PASSWORD


async def test_register_returns_private_view_without_secrets(client, db):
    resp = await client.post(
        f"{API}/users",
        json={
            "username": "alice",
            "email": "Alice@Example.com",
            "display_name": "Alice",
            "password": PASSWORD,
        },
    )
    assert resp.status == 201
    body = await resp.json()
    assert resp.headers["Location"] == f"{API}/users/{body['id']}"
    assert body["username"] == "alice"
    assert body["email"] == "alice@example.com"
    assert body["stats"] == {
        "count": 0,
        "mean": None,
        "histogram": {f"{s / 2:.1f}": 0 for s in range(1, 11)},
    }
    assert "password" not in body and "password_hash" not in body
    stored = await db.users.find_one({"username": "alice"})
    assert stored["password_hash"].startswith("$argon2id$")


async def test_duplicate_username_and_email_conflict(api, client, db):
    await api.user("bob")
    for body, field in [
        ({"username": "bob", "email": "other@example.com"}, "username"),
        ({"username": "bobby", "email": "BOB@example.com"}, "email"),
    ]:
        resp = await client.post(
            f"{API}/users", json={**body, "display_name": "B", "password": PASSWORD}
        )
        assert resp.status == 409
        problem = await resp.json()
        assert resp.content_type == "application/problem+json"
        assert problem["field"] == field
    assert await db.users.count_documents({}) == 1


async def test_register_validation_lists_each_field(client, db):
    resp = await client.post(
        f"{API}/users",
        json={
            "username": "No Caps!",
            "email": "nope",
            "display_name": "",
            "password": "short",
            "role": "admin",
        },
    )
    assert resp.status == 422
    problem = await resp.json()
    fields = {e["field"] for e in problem["errors"]}
    assert fields == {"username", "email", "display_name", "password", "role"}
    assert await db.users.count_documents({}) == 0


async def test_public_view_hides_email_and_private_view_shows_it(api, client):
    alice = await api.user("alice")
    resp = await client.get(f"{API}/users/{alice['id']}")
    assert resp.status == 200
    public = await resp.json()
    assert "email" not in public and public["username"] == "alice"
    resp = await client.get(f"{API}/users/me", headers=alice["auth"])
    assert (await resp.json())["email"] == "alice@example.com"


async def test_unknown_and_malformed_user_ids(client, db):
    resp = await client.get(f"{API}/users/65f1c0ffee0123456789abcd")
    assert resp.status == 404
    resp = await client.get(f"{API}/users/not-an-id")
    assert resp.status == 422


async def test_me_requires_a_token(client, db):
    resp = await client.get(f"{API}/users/me")
    assert resp.status == 401
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")
    resp = await client.get(f"{API}/users/me", headers={"Authorization": "Bearer garbage"})
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_patch_me_changes_display_name_and_email(api, client):
    alice = await api.user("alice")
    resp = await client.patch(
        f"{API}/users/me",
        json={"display_name": "Alice L.", "email": "new@example.com", "current_password": PASSWORD},
        headers=alice["auth"],
    )
    assert resp.status == 200
    body = await resp.json()
    assert (body["display_name"], body["email"]) == ("Alice L.", "new@example.com")


async def test_patch_me_email_conflict_and_empty_body(api, client, db):
    alice = await api.user("alice")
    await api.user("bob")
    resp = await client.patch(
        f"{API}/users/me",
        json={"email": "bob@example.com", "current_password": PASSWORD},
        headers=alice["auth"],
    )
    assert resp.status == 409
    assert (await db.users.find_one({"username": "alice"}))["email"] == "alice@example.com"
    resp = await client.patch(f"{API}/users/me", json={}, headers=alice["auth"])
    assert resp.status == 422


async def test_password_change_needs_current_password(api, client):
    alice = await api.user("alice")
    resp = await client.patch(
        f"{API}/users/me", json={"password": "another long one"}, headers=alice["auth"]
    )
    assert resp.status == 422
    resp = await client.patch(
        f"{API}/users/me",
        json={"password": "another long one", "current_password": PASSWORD},
        headers=alice["auth"],
    )
    assert resp.status == 200
    assert (await api.login("alice", "another long one"))["token_type"] == "Bearer"


async def _refresh(client, tokens):
    return await client.post(
        f"{API}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )


async def test_email_change_needs_the_current_password(api, client, db):
    alice = await api.user("alice")
    change = {"email": "new@example.com"}
    for body in (change, {**change, "current_password": "wrong guess!"}):
        resp = await client.patch(f"{API}/users/me", json=body, headers=alice["auth"])
        assert resp.status == 422
        problem = await resp.json()
        assert any(e["field"] == "current_password" for e in problem["errors"])
    assert (await db.users.find_one({"username": "alice"}))["email"] == "alice@example.com"
    # The same address again is no change, and needs nothing.
    same = await client.patch(
        f"{API}/users/me", json={"email": "Alice@example.com"}, headers=alice["auth"]
    )
    assert same.status == 200


async def test_password_or_email_change_ends_every_other_login(api, client):
    alice = await api.user("alice")  # login 1: makes the change
    other = await api.login("alice")  # login 2: another device
    third = await api.login("alice")  # login 3
    resp = await client.patch(
        f"{API}/users/me",
        json={"password": "another long one", "current_password": PASSWORD},
        headers=alice["auth"],
    )
    assert resp.status == 200
    for tokens in (other, third):
        refused = await _refresh(client, tokens)
        assert refused.status == 400 and (await refused.json())["error"] == "invalid_grant"
    kept = await _refresh(client, alice["tokens"])
    assert kept.status == 200  # the login that made the change goes on

    # An email change does the same.
    fourth = await api.login("alice", "another long one")
    rotated = await kept.json()
    resp = await client.patch(
        f"{API}/users/me",
        json={"email": "alice2@example.com", "current_password": "another long one"},
        headers={"Authorization": f"Bearer {rotated['access_token']}"},
    )
    assert resp.status == 200
    assert (await _refresh(client, fourth)).status == 400
    assert (await _refresh(client, rotated)).status == 200


async def test_wrong_current_password_is_throttled_like_a_login(aiohttp_client, settings, db):
    from api.app import create_app
    from tests.conftest import Api

    strict = settings.model_copy(update={"login_failures_per_pair": 3})
    client = await aiohttp_client(create_app(strict))
    alice = await Api(client, db).user("alice")
    statuses = []
    for _ in range(5):
        resp = await client.patch(
            f"{API}/users/me",
            json={"password": "another long one", "current_password": "a wrong guess"},
            headers=alice["auth"],
        )
        statuses.append(resp.status)
    assert statuses == [422, 422, 422, 429, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.content_type == "application/problem+json"


async def test_usernames_match_whole_and_normalised(client, db):
    async def register(username, display_name="Someone"):
        return await client.post(
            f"{API}/users",
            json={
                "username": username,
                "email": f"{abs(hash(username))}@example.com",
                "display_name": display_name,
                "password": PASSWORD,
            },
        )

    assert (await register("root")).status == 201
    assert (await register("root\n")).status == 422  # $ used to match before the newline
    fullwidth = await register("\uff52\uff4f\uff4f\uff54")  # "root" in fullwidth letters
    assert fullwidth.status == 409  # NFKC first: the same name
    assert (await register("ROOT")).status == 422  # lower case only, as documented
    for bad in ("Eve\u202eevil", "Eve\x00", "Eve\nMallory", "Eve\u2066x", "x" * 65, "   "):
        resp = await register(f"user{abs(hash(bad)) % 10**6}", bad)
        assert resp.status == 422, bad
        assert (await resp.json())["errors"][0]["field"] == "display_name"
    assert (await register("eve", "Ève Ünïcode 😀")).status == 201
    assert await db.users.count_documents({}) == 2


async def test_sign_ups_are_limited_per_address(aiohttp_client, settings, db):
    from api.app import create_app

    client = await aiohttp_client(create_app(settings.model_copy(update={"signup_rate_per_ip": 3})))
    statuses = []
    for n in range(4):
        body = {
            "username": f"new{n}",
            "email": f"new{n}@example.com",
            "display_name": "New",
            "password": "a long enough password",
        }
        resp = await client.post(f"{API}/users", json=body)
        statuses.append(resp.status)
    assert statuses == [201, 201, 201, 429]
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.content_type == "application/problem+json"


async def test_the_importers_usernames_cannot_be_registered(client, db):
    for name in ("movielens-9001", "\uff4dovielens-7"):  # fullwidth m: the same after NFKC
        body = {
            "username": name,
            "email": "squat@example.com",
            "display_name": "Squatter",
            "password": "a long enough password",
        }
        resp = await client.post(f"{API}/users", json=body)
        assert resp.status == 422, name
        problem = await resp.json()
        assert problem["errors"][0]["field"] == "username"
    assert await db.users.count_documents({}) == 0
    # Near names are anyone's.
    body["username"] = "movielens-fan"
    assert (await client.post(f"{API}/users", json=body)).status == 201
