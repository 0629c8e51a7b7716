"""ETags, 304 Not Modified and Cache-Control on reads."""

from __future__ import annotations

from tests.conftest import API, eventually


async def test_movie_etag_304_and_change(api, client):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    url = f"{API}/movies/{movie['id']}"
    first = await client.get(url)
    etag = first.headers["ETag"]
    assert first.headers["Cache-Control"] == "public, max-age=5"
    again = await client.get(url, headers={"If-None-Match": etag})
    assert again.status == 304 and await again.read() == b""
    assert again.headers["ETag"] == etag
    weak = await client.get(url, headers={"If-None-Match": f'"other", W/{etag}'})
    assert weak.status == 304
    assert (await client.get(url, headers={"If-None-Match": '"stale"'})).status == 200

    await api.rate(await api.user(), movie["id"], 4.0)

    async def changed():
        resp = await client.get(url, headers={"If-None-Match": etag})
        return resp.status == 200 and resp.headers["ETag"] != etag

    await eventually(changed)


async def test_lists_and_profiles_carry_etags(api, client):
    alice = await api.user("alice")
    for url in [
        f"{API}/movies",
        f"{API}/users/{alice['id']}",
        f"{API}/users/{alice['id']}/ratings",
    ]:
        resp = await client.get(url)
        assert resp.status == 200 and resp.headers["Cache-Control"].startswith("public")
        assert (
            await client.get(url, headers={"If-None-Match": resp.headers["ETag"]})
        ).status == 304


async def test_own_data_is_private_and_not_stored(api, client):
    alice = await api.user("alice")
    for url in [f"{API}/users/me", f"{API}/users/me/ratings"]:
        resp = await client.get(url, headers=alice["auth"])
        assert resp.headers["Cache-Control"] == "private, no-store"
        hit = await client.get(url, headers={**alice["auth"], "If-None-Match": "*"})
        assert hit.status == 304
