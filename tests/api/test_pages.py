"""Cursor pages: every list walks each item once in its order, also while summaries change,
and a cursor is only good for the list that issued it."""

from __future__ import annotations

import base64

import pytest
from bson import ObjectId

from api.schemas import OFFSET_MAX
from core.services.movies import SORTS
from tests.conftest import API

# (title, year, votes, mean, weighted): ties on every key, and rows with no value.
FILMS = [
    ("Alpha", 1999, 3, 4.0, 3.8),
    ("Bravo", None, 0, None, None),
    ("Charlie", 1999, 3, 4.0, 3.8),
    ("Delta", 2005, 10, 2.5, 2.7),
    ("Echo", None, 0, None, None),
    ("Foxtrot", 1980, 1, 5.0, 3.4),
    ("Golf", 1999, 3, 3.0, 3.1),
    ("Hotel", 2005, 0, None, None),
    ("India", 1980, 10, 4.0, 3.9),
]


async def _films(api, db) -> dict[str, str]:
    admin = await api.user("root", admin=True)
    ids = {}
    for title, year, votes, mean, weighted in FILMS:
        movie = await api.movie(admin, title=title, year=year)
        ids[title] = movie["id"]
        summary = {"rating.count": votes, "rating.mean": mean, "rating.weighted": weighted}
        await db.movies.update_one({"_id": ObjectId(movie["id"])}, {"$set": summary})
    return ids


async def _walk(client, url: str, name=lambda item: item["title"]) -> list[str]:
    seen = []
    for _ in range(50):
        resp = await client.get(url)
        assert resp.status == 200, await resp.text()
        page = await resp.json()
        seen += [name(item) for item in page["items"]]
        if page["next"] is None:
            return seen
        assert "offset=" not in page["next"]
        url = page["next"]
    raise AssertionError("more pages than items")


@pytest.mark.parametrize("sort", sorted(SORTS))
async def test_every_sort_walks_each_movie_once_in_order(api, client, db, sort):
    await _films(api, db)
    one_page = await (await client.get(f"{API}/movies?sort={sort}&limit=100")).json()
    expected = [m["title"] for m in one_page["items"]]
    assert sorted(expected) == sorted(f[0] for f in FILMS)
    assert await _walk(client, f"{API}/movies?sort={sort}&limit=2") == expected
    # The first page may still start at a small offset; `next` then carries a cursor.
    assert await _walk(client, f"{API}/movies?sort={sort}&limit=2&offset=3") == expected[3:]


async def test_pages_neither_repeat_nor_skip_while_votes_change(api, client, db):
    ids = await _films(api, db)
    resp = await client.get(f"{API}/movies?sort=-votes&limit=3")
    first = await resp.json()
    seen = [m["title"] for m in first["items"]]  # Delta, India, Alpha
    # Underneath: a film already shown and one still to come swap places.
    for title, votes in (("Alpha", 0), ("Hotel", 11)):
        await db.movies.update_one({"_id": ObjectId(ids[title])}, {"$set": {"rating.count": votes}})
    rest = await _walk(client, first["next"])
    unchanged = [t for t in seen + rest if t not in {"Alpha", "Hotel"}]
    assert sorted(unchanged) == sorted(f[0] for f in FILMS if f[0] not in {"Alpha", "Hotel"})
    assert len(unchanged) == len(set(unchanged))


async def test_search_pages_by_relevance(api, client):
    admin = await api.user("root", admin=True)
    for title in ("Heat", "Heat Wave", "The Heat", "Heatstroke", "In the Heat of the Night"):
        await api.movie(admin, title=title)
    walked = await _walk(client, f"{API}/movies?q=heat&limit=2")
    assert walked[:2] == ["Heat", "The Heat"] or walked[:2] == ["The Heat", "Heat"]
    assert walked[-1] == "Heatstroke"  # only a prefix of its word
    assert sorted(walked) == [
        "Heat",
        "Heat Wave",
        "Heatstroke",
        "In the Heat of the Night",
        "The Heat",
    ]


def _tampered(cursor: str) -> str:
    body, mac = cursor.split(".")
    data = bytearray(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    data[-3] ^= 1
    return base64.urlsafe_b64encode(bytes(data)).rstrip(b"=").decode() + "." + mac


async def _assert_bad_cursor(client, url: str) -> None:
    resp = await client.get(url)
    assert resp.status == 400, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"].endswith("/problems/bad-cursor")


async def test_a_cursor_is_good_only_for_its_own_list(api, client, db):
    ids = await _films(api, db)
    page = await (await client.get(f"{API}/movies?sort=-votes&limit=2")).json()
    cursor = page["next"].split("cursor=")[1]
    assert (await client.get(f"{API}/movies?sort=-votes&limit=5&cursor={cursor}")).status == 200
    await _assert_bad_cursor(client, f"{API}/movies?sort=-votes&cursor={_tampered(cursor)}")
    await _assert_bad_cursor(client, f"{API}/movies?sort=title&cursor={cursor}")
    await _assert_bad_cursor(client, f"{API}/movies?sort=-votes&genre=Drama&cursor={cursor}")
    for forged in ("a.b", cursor[:-2], cursor.split(".")[0] + ".AAAAAAAAAAAAAAAAAAAAAA"):
        await _assert_bad_cursor(client, f"{API}/movies?sort=-votes&cursor={forged}")
    for malformed in ("x", "....", "%00", "a" * 601 + ".b"):  # not even the cursor's pattern
        resp = await client.get(f"{API}/movies?sort=-votes&cursor={malformed}")
        assert resp.status == 422 and "cursor" in await resp.text(), malformed
    other = await client.get(f"{API}/movies/{ids['Alpha']}/ratings?cursor={cursor}")
    assert other.status == 400
    both = await client.get(f"{API}/movies?sort=-votes&cursor={cursor}&offset=2")
    assert both.status == 422
    deep = await client.get(f"{API}/movies?offset={OFFSET_MAX + 1}")
    assert deep.status == 422 and "offset" in await deep.text()


async def test_profiles_and_a_movies_ratings_walk_by_cursor(api, client):
    admin = await api.user("root", admin=True)
    fan, other = await api.user(), await api.user()
    films = [await api.movie(admin, title=f"Film {i}") for i in range(7)]
    for i, film in enumerate(films):
        await api.rate(fan, film["id"], 0.5 + (i % 3))
    await api.rate(other, films[0]["id"], 2.0)
    for sort in ("recent", "score"):
        url = f"{API}/users/{fan['id']}/ratings?sort={sort}&limit=3"
        own = await _walk(client, url, name=lambda item: item["movie"]["title"])
        assert sorted(own) == sorted(f"Film {i}" for i in range(7)), sort
    seen, url = [], f"{API}/movies/{films[0]['id']}/ratings?limit=1"
    while url:
        page = await (await client.get(url)).json()
        seen += [item["user_id"] for item in page["items"]]
        url = page["next"]
    assert sorted(seen) == sorted([fan["id"], other["id"]])
