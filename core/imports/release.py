"""MovieLens files parsed into rows: what `core.imports.writer` writes to the catalogue.

A `MovieLensRelease` reads a folder or a .zip (`core.imports.source`) file by file, in
batches, and turns each CSV line into a typed row or the reason it is bad. Nothing here
touches the database.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import InvalidInput
from core.imports.download import fetch
from core.imports.source import Source
from core.imports.writer import LinkRow, MovieRow, Parsed, RatingRow, TagRow
from core.settings import Settings
from core.store import chunked
from models import ImportJob

NO_GENRES = "(no genres listed)"
_TITLE_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")


def parse_title(raw: str) -> tuple[str, int | None]:
    """'Toy Story (1995)' -> ('Toy Story', 1995); a title without a year keeps year None."""
    match = _TITLE_YEAR.match(raw)
    if match and match["title"]:
        return match["title"], int(match["year"])
    return raw.strip(), None


def parse_genres(raw: str) -> list[str]:
    return [] if raw.strip() in ("", NO_GENRES) else [g for g in raw.split("|") if g]


def _positive_int(value: str) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number > 0 else None


def parse_score(value: str) -> float | None:
    try:
        score = float(value)
    except ValueError:
        return None
    if not math.isfinite(score) or not 0.5 <= score <= 5.0 or score * 2 != int(score * 2):
        return None
    return score


def parse_link(fields: list[str]) -> LinkRow | str:
    """movieId,imdbId,tmdbId (either external id may be empty)."""
    movie_id = _positive_int(fields[0])
    imdb, tmdb_raw = fields[1].strip(), fields[2].strip()
    tmdb = _positive_int(tmdb_raw) if tmdb_raw else None
    if movie_id is None or (imdb and not imdb.isdigit()) or (tmdb_raw and not tmdb):
        return "movieId, imdbId or tmdbId is not a number"
    return LinkRow(movielens=movie_id, imdb=f"tt{imdb}" if imdb else None, tmdb=tmdb)


def parse_movie(fields: list[str]) -> MovieRow | str:
    """movieId,title (year),genres|separated."""
    movie_id = _positive_int(fields[0])
    if movie_id is None or not fields[1].strip():
        return "movieId must be a positive integer, title set"
    title, year = parse_title(fields[1])
    return MovieRow(
        movielens=movie_id,
        title=title,
        year=year,
        genres=parse_genres(fields[2]),
        source_title=fields[1].strip(),
    )


def parse_rating(fields: list[str]) -> RatingRow | str:
    """userId,movieId,rating,timestamp."""
    user_id, movie_id = _positive_int(fields[0]), _positive_int(fields[1])
    score = parse_score(fields[2])
    try:
        rated_at = datetime.fromtimestamp(int(fields[3]), UTC)
    except (ValueError, OverflowError, OSError):
        rated_at = None
    if user_id is None or movie_id is None:
        return "userId and movieId must be positive integers"
    if score is None:
        return f"rating {fields[2]!r} is not 0.5-5.0 in halves"
    if rated_at is None:
        return f"timestamp {fields[3]!r} is not a Unix time"
    return RatingRow(user=user_id, movie=movie_id, score=score, rated_at=rated_at)


def parse_tag(fields: list[str]) -> TagRow | str:
    """userId,movieId,tag,timestamp: checked for shape only."""
    user, movie = _positive_int(fields[0]) or 0, _positive_int(fields[1]) or 0
    return TagRow(user=user, movie=movie, tag=fields[2])


# file name -> (fields per line, parser)
PARSERS: dict[str, tuple[int, Callable[[list[str]], Any]]] = {
    "links.csv": (3, parse_link),
    "movies.csv": (3, parse_movie),
    "ratings.csv": (4, parse_rating),
    "tags.csv": (4, parse_tag),
}


class MovieLensRelease:
    """A MovieLens release as batches of parsed rows (`core.imports.writer.Release`)."""

    def __init__(self, source: Source) -> None:
        self.source = source

    def has(self, name: str) -> bool:
        return self.source.has(name)

    def count_rows(self, name: str) -> int:
        return self.source.count_rows(name)

    @contextmanager
    def batches(self, name: str, size: int) -> Iterator[Iterator[list[Parsed]]]:
        width, parse = PARSERS[name]

        def parsed(rows: Any) -> Iterator[list[Parsed]]:
            for batch in chunked(rows, size):
                yield [
                    (line, parse(fields))
                    if fields is not None and len(fields) == width
                    else (line, why or f"expected {width} fields")
                    for line, fields, why in batch
                ]

        with self.source.rows(name) as rows:
            yield parsed(rows)

    def close(self) -> None:
        self.source.close()


def resolve_import_path(root: Path, raw: str) -> tuple[Path, str]:
    """(absolute path, path relative to the import root); anything escaping it is refused."""
    base = root.resolve()
    if "\x00" in raw:
        raise InvalidInput("The path must not contain a NUL character.", {"path": ["Not allowed."]})
    try:
        candidate = (base / raw).resolve()  # an absolute `raw` replaces base: checked below
    except (OSError, ValueError):
        raise InvalidInput("The path cannot be used.", {"path": ["Not allowed."]}) from None
    if not candidate.is_relative_to(base):
        if Path(os.path.normpath(base / raw)).is_relative_to(base):  # a link led out of it
            raise InvalidInput(
                "The path is a symbolic link to a place outside the import root: copy the "
                "release into the import root instead.",
                {"path": ["Not allowed."]},
            )
        raise InvalidInput("The path must stay inside the import root.", {"path": ["Not allowed."]})
    if not candidate.exists():
        raise InvalidInput("Nothing exists at that path.", {"path": ["Not found."]})
    return candidate, str(candidate.relative_to(base))


async def open_job_release(job: ImportJob, settings: Settings) -> MovieLensRelease:
    """The release an import job names: downloaded (cached) from its URL, or read from its
    path under the import root."""
    if job.url:
        path = await asyncio.to_thread(
            fetch,
            job.url,
            cache_dir=settings.cache_dir,
            require_checksum=False,
            progress=False,
            policy=settings.import_url_policy,
        )
    else:
        path = resolve_import_path(settings.imports_dir, job.path or "")[0]
    return MovieLensRelease(Source(path))
