"""Service logic: plain calls for arithmetic and filters, the test server for queries."""

from __future__ import annotations

import pytest

from api.middlewares import flatten_errors
from core.errors import Conflict, NotFound
from core.services import movies
from core.summaries import weighted_score
from models import PydanticObjectId
from tests.fakes import NO_CACHE


def test_weighted_score_pulls_small_samples_towards_the_global_mean():
    assert weighted_score(count=0, mean=None, prior_votes=10, prior_mean=3.0) is None
    assert weighted_score(count=10, mean=5.0, prior_votes=10, prior_mean=3.0) == 4.0
    assert weighted_score(count=3, mean=4.0, prior_votes=0, prior_mean=3.0) == 4.0
    assert weighted_score(count=3, mean=4.0, prior_votes=10, prior_mean=None) == 4.0


def test_movie_filter_is_one_merged_document():
    query = movies.MovieQuery(genre="Comedy", year_min=1990, year_max=2000, min_votes=5)
    assert query.store_filters.document() == {
        "genres": "Comedy",
        "year": {"$gte": 1990, "$lte": 2000},
        "rating.count": {"$gte": 5},
    }
    assert movies.MovieQuery(year_max=1990).store_filters.document() == {"year": {"$lte": 1990}}


def test_every_sort_ends_in_id_for_a_total_order():
    assert all(sort[-1][0] == "_id" for sort in movies.SORTS.values())


def test_flatten_errors_lists_each_field():
    flat = flatten_errors({"json": {"a": ["bad"], "b": {"c": ["worse"]}, "_schema": ["x"]}})
    assert {(e["field"], e["message"]) for e in flat} == {("a", "bad"), ("b.c", "worse"), ("", "x")}


async def test_create_get_list_and_update_movies(odm):
    alien = await movies.create_movie(
        title="Alien",
        year=1979,
        genres=["Horror"],
        external_ids={"movielens": 1214},
        cache=NO_CACHE,
    )
    await movies.create_movie(
        title="Aliens", year=1986, genres=["Action"], external_ids={}, cache=NO_CACHE
    )
    assert (await movies.get_movie(movie_id=alien["id"])).title == "Alien"
    page = await movies.list_movies(
        query=movies.MovieQuery(q="ALIEN", sort="-year"), offset=0, limit=1
    )
    assert [m["title"] for m in page.items] == ["Aliens"]
    assert page.after == (1986, page.items[0]["id"])
    updated = await movies.update_movie(
        movie_id=alien["id"], changes={"title": "Alien, The (Director's Cut)"}, cache=NO_CACHE
    )
    assert (updated["title"], updated["aliases"]) == ("The Alien", ["Director's Cut"])
    assert (await movies.get_movie(movie_id=alien["id"])).title_key == "the alien"
    with pytest.raises(NotFound):
        await movies.update_movie(
            movie_id=PydanticObjectId(), changes={"year": 2000}, cache=NO_CACHE
        )


async def test_duplicate_movielens_id_conflicts(odm):
    await movies.create_movie(
        title="A", year=None, genres=[], external_ids={"movielens": 5}, cache=NO_CACHE
    )
    with pytest.raises(Conflict):
        await movies.create_movie(
            title="B", year=None, genres=[], external_ids={"movielens": 5}, cache=NO_CACHE
        )
