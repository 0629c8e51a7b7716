"""One canonical request: repeated parameters refused, links and cache entries built from
the parsed query, private and public pages never sharing an entry."""

from __future__ import annotations

from api.appkeys import NEAR
from core.cache import NearCache
from tests.conftest import API


async def test_a_repeated_query_parameter_is_a_422_naming_it(api, client):
    for url in (f"{API}/movies?limit=5&limit=a", f"{API}/movies?sort=title&sort=-year&q=x"):
        resp = await client.get(url)
        assert resp.status == 422, url
        assert resp.content_type == "application/problem+json"
        fields = {(e["location"], e["field"]) for e in (await resp.json())["errors"]}
        assert fields in ({("querystring", "limit")}, {("querystring", "sort")})


async def test_next_links_come_from_the_parsed_query_not_the_raw_one(api, client):
    admin = await api.user("root", admin=True)
    for title in ("A", "B", "C"):
        await api.movie(admin, title=title)
    page = await (await client.get(f"{API}/movies?sort=-title&limit=002&offset=0")).json()
    assert page["next"].startswith(f"{API}/movies?limit=2&sort=-title&cursor=")
    following = await client.get(page["next"])
    assert following.status == 200
    assert [m["title"] for m in (await following.json())["items"]] == ["A"]


async def test_spellings_of_one_request_share_one_near_cache_entry(api, client):
    admin = await api.user("root", admin=True)
    await api.movie(admin)
    near: NearCache = client.app[NEAR]
    first = await client.get(f"{API}/movies?limit=5&sort=-votes")
    assert first.status == 200
    held = near.size
    for i in range(50):  # limit=05, limit=005, … in either order: one entry
        resp = await client.get(f"{API}/movies?sort=-votes&limit={'0' * i}5")
        assert resp.status == 200
        assert await resp.read() == await first.read()
    assert near.size == held


async def test_own_and_public_profile_pages_never_share_an_entry(api, client):
    admin = await api.user("root", admin=True)
    rater = await api.user()
    for title in ("A", "B", "C"):
        await api.rate(rater, (await api.movie(admin, title=title))["id"], 4.0)
    public = f"{API}/users/{rater['id']}/ratings?limit=1"
    seen = await (await client.get(public)).json()  # cached first, by anyone
    own = await (await client.get(f"{API}/users/me/ratings?limit=1", headers=rater["auth"])).json()
    assert seen["next"].startswith(f"{API}/users/{rater['id']}/ratings?")
    assert own["next"].startswith(f"{API}/users/me/ratings?")
    again = await (await client.get(public)).json()
    assert again["next"] == seen["next"]
    mine = await client.get(own["next"], headers=rater["auth"])
    assert mine.status == 200 and len((await mine.json())["items"]) == 1


def test_the_near_cache_is_bounded_in_bytes_and_drops_the_least_recently_used():
    near = NearCache(ttl=60, max_bytes=10_000)
    near.live = True
    body = b"x" * 1000
    for i in range(30):
        stamp = near.stamp("v")
        near.put(f"/u{i}", version="v", stamp=stamp, body=body, etag="e", cache_control="c")
        assert near.get("/u0") is not None  # read after every write: never the oldest
    assert near.size <= 10_000
    assert near.get("/u29") is not None
    assert near.get("/u1") is None  # the oldest unread went first
    near.put("/big", version="v", stamp=near.stamp("v"), body=b"x" * 20_000, etag="e",
             cache_control="c")  # fmt: skip
    assert near.get("/big") is None and near.size <= 10_000
