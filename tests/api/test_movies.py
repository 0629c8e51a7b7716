"""The catalogue: admin writes, reads, search, filters, sorts, pagination."""

from __future__ import annotations

from tests.conftest import API, eventually


async def test_only_movie_writers_create_movies(api, client, db):
    user = await api.user()
    body = {"title": "Alien", "year": 1979, "genres": ["Horror"]}
    assert (await client.post(f"{API}/movies", json=body)).status == 401
    resp = await client.post(f"{API}/movies", json=body, headers=user["auth"])
    assert resp.status == 403
    assert (await resp.json())["required_scope"] == "movies:write"
    assert await db.movies.count_documents({}) == 0


async def test_create_and_get_movie_with_empty_summary(api, client):
    admin = await api.user("root", admin=True)
    resp = await client.post(
        f"{API}/movies",
        json={
            "title": "Alien",
            "year": 1979,
            "genres": ["Horror", "Sci-Fi"],
            "external_ids": {"movielens": 1214, "imdb": "tt0078748", "tmdb": 348},
        },
        headers=admin["auth"],
    )
    assert resp.status == 201
    created = await resp.json()
    resp = await client.get(resp.headers["Location"])
    movie = await resp.json()
    assert movie == created
    assert movie["external_ids"] == {"movielens": 1214, "imdb": "tt0078748", "tmdb": 348}
    assert movie["rating"]["count"] == 0
    assert movie["rating"]["mean"] is None and movie["rating"]["weighted"] is None
    assert list(movie["rating"]["histogram"]) == [f"{i / 2:.1f}" for i in range(1, 11)]


async def test_movie_validation_and_conflicts(api, client, db):
    admin = await api.user("root", admin=True)
    bad = [
        {"year": 1999},
        {"title": "", "year": 1999},
        {"title": "X", "year": "1999"},
        {"title": "X", "year": 1200},
        {"title": "X", "genres": "Drama"},
        {"title": "X", "external_ids": {"movielens": "12"}},
        {"title": "X", "id": "65f1c0ffee0123456789abcd"},
        {"title": "X", "rating": {"count": 99}},
    ]
    for body in bad:
        resp = await client.post(f"{API}/movies", json=body, headers=admin["auth"])
        assert resp.status == 422, body
    assert await db.movies.count_documents({}) == 0
    await api.movie(admin, external_ids={"movielens": 7})
    resp = await client.post(
        f"{API}/movies",
        json={"title": "Dup", "external_ids": {"movielens": 7}},
        headers=admin["auth"],
    )
    assert resp.status == 409


async def test_unknown_movie_is_404_and_bad_id_422(client, db):
    assert (await client.get(f"{API}/movies/65f1c0ffee0123456789abcd")).status == 404
    assert (await client.get(f"{API}/movies/xyz")).status == 422


async def test_list_paginates_with_stable_order_and_next_links(api, client):
    admin = await api.user("root", admin=True)
    for i in range(7):
        await api.movie(admin, title=f"Film {i}", year=2000)
    seen, url = [], f"{API}/movies?sort=year&limit=3"
    while url:
        resp = await client.get(url)
        page = await resp.json()
        assert len(page["items"]) <= 3
        seen += [m["id"] for m in page["items"]]
        url = page["next"]
    assert len(seen) == len(set(seen)) == 7


async def test_search_filters_and_sorts(api, client):
    admin = await api.user("root", admin=True)
    await api.movie(admin, title="Toy Story", year=1995, genres=["Animation", "Comedy"])
    await api.movie(admin, title="Toy Soldiers", year=1991, genres=["Action"])
    await api.movie(admin, title="Alien", year=1979, genres=["Horror"])
    await api.movie(admin, title="A.I. (Artificial Intelligence)", year=2001, genres=["Drama"])

    async def titles(query):
        resp = await client.get(f"{API}/movies?{query}")
        assert resp.status == 200, await resp.text()
        return [m["title"] for m in (await resp.json())["items"]]

    assert await titles("q=TOY&sort=title") == ["Toy Soldiers", "Toy Story"]
    assert await titles("q=a.i.") == [
        "A.I."
    ]  # no regex injection (its alias: Artificial Intelligence)
    assert await titles("genre=Horror") == ["Alien"]
    assert await titles("year_min=1990&year_max=1999&sort=-year") == ["Toy Story", "Toy Soldiers"]
    assert await titles("sort=-title&limit=1") == ["Toy Story"]
    assert await titles("min_votes=1") == []
    for bad in ["sort=rating", "limit=0", "limit=101", "year_min=abc", "offset=-1", "color=red"]:
        assert (await client.get(f"{API}/movies?{bad}")).status == 422, bad


async def test_sort_by_votes_mean_and_weighted(api, client):
    admin = await api.user("root", admin=True)
    popular = await api.movie(admin, title="Popular")
    niche = await api.movie(admin, title="Niche")
    await api.movie(admin, title="Unrated")
    raters = [await api.user() for _ in range(3)]
    for r in raters:
        await api.rate(r, popular["id"], 4.0)
    await api.rate(raters[0], niche["id"], 5.0)

    async def converged():
        resp = await client.get(f"{API}/movies?sort=-votes")
        items = (await resp.json())["items"]
        return items if [m["rating"]["count"] for m in items] == [3, 1, 0] else None

    items = await eventually(converged)
    assert [m["title"] for m in items] == ["Popular", "Niche", "Unrated"]
    resp = await client.get(f"{API}/movies?sort=-mean")
    assert [m["title"] for m in (await resp.json())["items"]] == ["Niche", "Popular", "Unrated"]
    resp = await client.get(f"{API}/movies?min_votes=2")
    assert [m["title"] for m in (await resp.json())["items"]] == ["Popular"]
    resp = await client.get(f"{API}/movies?sort=-weighted")
    assert (await resp.json())["items"][0]["title"] in {"Niche", "Popular"}


async def test_filters_come_with_the_orders_their_index_reads(api, client):
    admin = await api.user("root", admin=True)
    await api.movie(admin, title="Heat", year=1995, genres=["Crime"])
    served = {
        "genre=crime": ["-weighted", "weighted"],
        "year_min=1990": ["year", "-year"],
        "year_max=2000": ["year", "-year"],
        "min_votes=1": ["-votes", "votes"],
    }
    for flt, sorts in served.items():
        for sort in ["", *sorts]:
            resp = await client.get(
                f"{API}/movies?{flt}&sort={sort}" if sort else f"{API}/movies?{flt}"
            )
            assert resp.status == 200, (flt, sort, await resp.text())
        for sort in {"title", "-year", "mean", "-weighted", "votes"} - set(sorts):
            resp = await client.get(f"{API}/movies?{flt}&sort={sort}")
            assert resp.status == 422, (flt, sort)
            problem = await resp.json()
            assert problem["errors"] == [
                {
                    "location": "querystring",
                    "field": "sort",
                    "message": problem["errors"][0]["message"],
                }
            ]
            assert {"filters": ["genre"], "sorts": ["-weighted", "weighted"]} in problem["served"]
    # Two filters together have no index; a search takes any filter and sort.
    assert (await client.get(f"{API}/movies?genre=Crime&year_min=1990")).status == 422
    resp = await client.get(f"{API}/movies?q=heat&genre=Crime&year_min=1990&sort=title")
    assert [m["title"] for m in (await resp.json())["items"]] == ["Heat"]


async def test_patch_movie(api, client, db):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin, title="Alein", year=1978)
    resp = await client.patch(
        f"{API}/movies/{movie['id']}",
        json={"title": "Alien", "year": 1979},
        headers=admin["auth"],
    )
    assert resp.status == 200
    body = await resp.json()
    assert (body["title"], body["year"]) == ("Alien", 1979)
    resp = await client.get(f"{API}/movies?q=alien")
    assert len((await resp.json())["items"]) == 1
    resp = await client.patch(f"{API}/movies/{movie['id']}", json={}, headers=admin["auth"])
    assert resp.status == 422
    resp = await client.patch(
        f"{API}/movies/65f1c0ffee0123456789abcd", json={"title": "X"}, headers=admin["auth"]
    )
    assert resp.status == 404
    user = await api.user()
    resp = await client.patch(
        f"{API}/movies/{movie['id']}", json={"title": "Hacked"}, headers=user["auth"]
    )
    assert resp.status == 403
    assert (await db.movies.find_one({"title": "Alien"})) is not None


async def test_delete_movie_removes_ratings_and_updates_user_stats(api, client, db):
    admin = await api.user("root", admin=True)
    doomed = await api.movie(admin, title="Doomed")
    kept = await api.movie(admin, title="Kept")
    alice = await api.user("alice")
    await api.rate(alice, doomed["id"], 1.0)
    await api.rate(alice, kept["id"], 5.0)

    async def stats(count):
        me = await (await client.get(f"{API}/users/me", headers=alice["auth"])).json()
        return me["stats"] if me["stats"]["count"] == count else None

    await eventually(lambda: stats(2))
    resp = await client.delete(f"{API}/movies/{doomed['id']}", headers=admin["auth"])
    assert resp.status == 204
    assert (await client.get(f"{API}/movies/{doomed['id']}")).status == 404
    final = await eventually(lambda: stats(1))
    assert final["mean"] == 5.0
    assert await db.ratings.count_documents({}) == 1
    resp = await client.delete(f"{API}/movies/{doomed['id']}", headers=admin["auth"])
    assert resp.status == 404


async def test_genres_in_any_case_and_their_counts(api, client):
    admin = await api.user("root", admin=True)
    comedy = await api.movie(admin, title="Airplane!", genres=["Comedy"])
    await api.movie(admin, title="Alien", genres=["Horror", "Sci-Fi"])
    listed = await client.get(f"{API}/genres")
    assert listed.status == 200
    assert (await listed.json())["items"] == [
        {"name": "Comedy", "movies": 1},
        {"name": "Horror", "movies": 1},
        {"name": "Sci-Fi", "movies": 1},
    ]
    for asked in ("comedy", "COMEDY", "Comedy"):
        page = await (await client.get(f"{API}/movies", params={"genre": asked})).json()
        assert [m["id"] for m in page["items"]] == [comedy["id"]], asked
    sci_fi = await (await client.get(f"{API}/movies", params={"genre": "sci-fi"})).json()
    assert [m["title"] for m in sci_fi["items"]] == ["Alien"]
    none = await (await client.get(f"{API}/movies", params={"genre": "western"})).json()
    assert none == {"items": [], "next": None}
    # A new movie shows in the counts at once (the genres entry is invalidated with it).
    await api.movie(admin, title="Top Secret!", genres=["Comedy"])
    counts = {
        g["name"]: g["movies"] for g in (await (await client.get(f"{API}/genres")).json())["items"]
    }
    assert counts["Comedy"] == 2
    page = await (await client.get(f"{API}/movies", params={"genre": "comedy"})).json()
    assert len(page["items"]) == 2


async def test_an_external_id_names_one_movie(api, client, db):
    admin = await api.user("root", admin=True)
    ids = {"movielens": 1, "imdb": "tt0114709", "tmdb": 862}
    toy = await api.movie(admin, title="Toy Story", year=1995, external_ids=ids)
    for source, value in ids.items():
        body = {"title": "Toy Story again", "external_ids": {source: value}}
        resp = await client.post(f"{API}/movies", json=body, headers=admin["auth"])
        assert resp.status == 409, source
        problem = await resp.json()
        assert problem["field"] == f"external_ids.{source}"
        assert problem["existing"] == f"{API}/movies/{toy['id']}"
    other = await api.movie(admin, title="Heat", year=1995)
    taken = await client.patch(
        f"{API}/movies/{other['id']}", json={"external_ids": {"tmdb": 862}}, headers=admin["auth"]
    )
    assert taken.status == 409 and (await taken.json())["existing"].endswith(toy["id"])
    own = await client.patch(
        f"{API}/movies/{toy['id']}", json={"external_ids": {"tmdb": 862}}, headers=admin["auth"]
    )
    assert own.status == 200  # a movie may restate its own ids
    assert await db.movies.count_documents({}) == 2


async def test_titles_typed_into_the_api_get_the_same_rules(api, client):
    admin = await api.user("root", admin=True)
    matrix = await api.movie(admin, title="Matrix, The", year=1999)
    assert matrix["title"] == "The Matrix" and matrix["aliases"] == []
    seven = await api.movie(admin, title="Seven (a.k.a. Se7en)", year=1995)
    assert (seven["title"], seven["aliases"]) == ("Seven", ["Se7en"])
    found = await (await client.get(f"{API}/movies", params={"q": "the matrix"})).json()
    assert [m["id"] for m in found["items"]] == [matrix["id"]]
    changed = await client.patch(
        f"{API}/movies/{seven['id']}", json={"title": "Se7en"}, headers=admin["auth"]
    )
    assert (await changed.json())["title"] == "Se7en"


async def test_a_search_too_short_to_be_selective_finds_exact_names_only(api, client):
    admin = await api.user("root", admin=True)
    for title in ("Up", "Upside Down", "The Thing", "Thor", "Pi"):
        await api.movie(admin, title=title)

    async def titles(query):
        resp = await client.get(f"{API}/movies?{query}&sort=title")
        assert resp.status == 200, await resp.text()
        return [m["title"] for m in (await resp.json())["items"]]

    assert await titles("q=up") == ["Up"]  # not every film with a word starting "up"
    assert await titles("q=th") == []
    assert await titles("q=pi") == ["Pi"]
    assert await titles("q=ups") == ["Upside Down"]  # three letters: prefixes again
    assert await titles("q=tho") == ["Thor"]
