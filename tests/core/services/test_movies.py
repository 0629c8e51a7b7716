"""Catalogue services against the test server: title search fields for older records."""

from __future__ import annotations

from core.services import movies
from tests.fakes import NO_CACHE


async def test_movies_stored_before_title_search_get_its_fields_once(client, db):
    await db.movies.insert_many(
        [{"title": f"Old {i}", "title_key": f"old {i}", "aliases": ["Ancien"]} for i in range(7)]
    )
    await movies.create_movie(title="New", year=None, genres=[], external_ids={}, cache=NO_CACHE)
    assert await movies.index_titles(cache=NO_CACHE, batch=3) == 7
    assert await movies.index_titles(cache=NO_CACHE) == 0
    page = await movies.list_movies(query=movies.MovieQuery(q="ancien"), limit=10)
    assert sorted(m.title for m in page.items) == [f"Old {i}" for i in range(7)]
