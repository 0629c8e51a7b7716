"""The small sample catalogue shipped with the project, loaded into an empty database."""

from __future__ import annotations

import csv
from importlib import resources

from core.search import title_fields
from core.store import movies as movie_store
from models import ExternalIds, Movie

SAMPLE_FILE = "sample_movies.csv"


def read_sample() -> list[dict]:
    """Rows of the shipped sample: title, year, genres and the films' real IMDb and TMDb
    ids (so a MovieLens import recognises them instead of adding each film again)."""
    text = resources.files("seed").joinpath(SAMPLE_FILE).read_text(encoding="utf-8")
    rows = []
    for row in csv.DictReader(text.splitlines()):
        rows.append(
            {
                "source_title": row["title"],
                "year": int(row["year"]) if row["year"] else None,
                "genres": [g for g in row["genres"].split("|") if g],
                "external_ids": ExternalIds(
                    imdb=row["imdb"] or None, tmdb=int(row["tmdb"]) if row["tmdb"] else None
                ),
            }
        )
    return rows


async def seed_sample() -> int:
    """Insert the sample catalogue when there are no movies yet; returns how many were added."""
    if await movie_store.any_movie():
        return 0
    movies = []
    for row in read_sample():
        movies.append(Movie(**title_fields(row["source_title"]), **row))
    await movie_store.insert_many(movies)
    return len(movies)
