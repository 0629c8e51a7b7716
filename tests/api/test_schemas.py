"""The response shapes written by hand must match the schemas the OpenAPI spec documents."""

from __future__ import annotations

from typing import Any

import pytest

from api.schemas import MoviePublicSchema, movie_body
from core.search import title_fields
from core.services import movies
from models import Movie, RatingSummary, utcnow


@pytest.mark.parametrize(
    "fields",
    [
        {},  # new: no ratings, no year, no ids
        {
            "year": 1999,
            "genres": ["Action", "Sci-Fi"],
            "external_ids": {"movielens": 2571, "imdb": "tt0133093", "tmdb": 603},
            "rating": RatingSummary.from_histogram(
                [0, 1, 0, 2, 0, 3, 0, 9, 4, 20], weighted=4.1, updated_at=utcnow()
            ),
        },
        {"external_ids": {"imdb": "tt0114709"}, "rating": RatingSummary(weighted=None)},
    ],
)
async def test_movie_body_is_what_the_public_schema_dumps(odm: Any, fields: dict) -> None:
    raw = "Amelie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    movie = Movie(**title_fields(raw), **fields)
    await movie.insert()
    stored = await Movie.get(movie.id)
    assert stored is not None and stored.id is not None
    dumped = stored.model_dump()
    expected = MoviePublicSchema().dump(dumped)
    assert movie_body(dumped) == expected
    assert expected["aliases"]  # the alias branch was exercised
    assert movie_body(await movies.movie_view(movie_id=stored.id)) == expected


async def test_movie_body_gives_a_stored_movie_without_newer_fields_their_defaults(
    odm: Any,
) -> None:
    """A record written before aliases, ids or a summary existed reads as the model shows it."""
    collection = Movie.get_pymongo_collection()
    inserted = await collection.insert_one({"title": "Alien", "title_key": "alien"})
    stored = await Movie.get(inserted.inserted_id)
    assert stored is not None
    expected = MoviePublicSchema().dump(stored.model_dump())
    assert movie_body(await movies.movie_view(movie_id=inserted.inserted_id)) == expected
