"""Writing a MovieLens release into the catalogue: streaming, batched, idempotent upserts
keyed by MovieLens ids.

Every batch reads what already exists for its keys with one index-served query, then writes
only the difference: new movies and users as upserts on their MovieLens id (their ids are read
back from the database, never chosen before the write), new ratings with insert_many, changed
ones with one bulk write, and nothing for unchanged ones. Running the same release twice
therefore writes nothing, and a run that was killed half-way can simply be run again.

A writing run holds the import lease (core.store.leases) from its first write to its
last, and confirms it after every batch: two imports never write at once, and one that
stalled past its lease stops before its next batch.

The rows come parsed from a `Release` (`core.imports.release` reads MovieLens files); the
store (`core.store`) owns the queries.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from core import summaries
from core.names import imported_username
from core.search import title_fields
from core.store import Duplicate
from core.store import movies as movie_store
from core.store import ratings as rating_store
from core.store import recommender as model_store
from core.store import users as user_store
from core.store.leases import FencedLease
from models import ImportReport, Movie, PydanticObjectId, User, utcnow
from models.import_job import FileProgress

BATCH_SIZE = 5000
_USER_CACHE = 256
FILES = ("links.csv", "movies.csv", "ratings.csv")
OPTIONAL_FILES = ("tags.csv",)


class ReleaseError(Exception):
    """The dataset cannot be read at all (missing, unreadable, not fetched): the import fails."""


@dataclass(frozen=True, slots=True)
class LinkRow:
    movielens: int
    imdb: str | None  # "tt0114709"
    tmdb: int | None


@dataclass(frozen=True, slots=True)
class MovieRow:
    movielens: int
    title: str
    year: int | None
    genres: list[str]
    source_title: str = ""  # the title exactly as the release writes it


@dataclass(frozen=True, slots=True)
class RatingRow:
    user: int  # MovieLens ids
    movie: int
    score: float
    rated_at: datetime


@dataclass(frozen=True, slots=True)
class TagRow:
    user: int
    movie: int
    tag: str


# (line number, the parsed row, or why the line is bad)
Parsed = tuple[int, Any]


class Release(Protocol):
    """A MovieLens release, read as batches of parsed rows."""

    def has(self, name: str) -> bool: ...

    def count_rows(self, name: str) -> int: ...

    def batches(self, name: str, size: int) -> AbstractContextManager[Iterator[list[Parsed]]]:
        """Batches of (line, row or reason) for one file; a `str` row is a bad line's reason."""
        ...

    def close(self) -> None: ...


def same_films(links: dict[int, LinkRow]) -> dict[int, int]:
    """Release records of one film (sharing an IMDb or a TMDb id, directly or through
    another record): each MovieLens id but the lowest of its group, mapped to that lowest."""
    parent = {movielens: movielens for movielens in links}

    def root(movielens: int) -> int:
        while parent[movielens] != movielens:
            parent[movielens] = parent[parent[movielens]]
            movielens = parent[movielens]
        return movielens

    for source in ("imdb", "tmdb"):
        first: dict[Any, int] = {}
        for movielens, link in links.items():
            key = getattr(link, source)
            if key is None:
                continue
            other = first.setdefault(key, movielens)
            a, b = root(movielens), root(other)
            parent[max(a, b)] = min(a, b)
    return {m: root(m) for m in links if root(m) != m}


class ImportCancelled(Exception):
    """The operator cancelled the job; what was written so far stays (and is consistent)."""


class Hooks:
    """Progress and cancellation callbacks; the CLI draws bars, a job writes its document."""

    async def file_started(self, name: str, total: int) -> None:
        """Called before a file is read, with its number of data rows."""

    async def advanced(self, name: str, rows: int, report: ImportReport) -> None:
        """Called after each batch with the rows it covered."""

    async def movies_written(
        self, *, inserted: list[PydanticObjectId], updated: list[PydanticObjectId]
    ) -> None:
        """Called after each batch of movies is stored (what readers may see changed)."""

    async def file_finished(self, name: str, report: ImportReport) -> None:
        """Called when a file is done."""

    async def cancelled(self) -> bool:
        return False


class MovieLensImport:
    """One run over one release; `dry_run` computes every count and writes nothing."""

    def __init__(
        self,
        release: Release,
        *,
        hooks: Hooks | None = None,
        dry_run: bool = False,
        batch_size: int = BATCH_SIZE,
        prior_votes: float = 10.0,
        drain_settle: float = 1.0,
        job_id: PydanticObjectId | None = None,
        lease: FencedLease | None = None,
    ) -> None:
        self.release = release
        # Held (acquired, renewed, confirmed after each batch) by a run that writes.
        self.lease = None if dry_run else lease
        # Tags this run's recompute intents: the job's id, so a resumed job finishes what an
        # earlier attempt wrote, and the drain leaves them alone while the job runs.
        self.intent_tag = job_id or PydanticObjectId()
        self.hooks = hooks or Hooks()
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.prior_votes = prior_votes
        self.drain_settle = drain_settle
        self.report = ImportReport()
        self.movie_ids: dict[int, PydanticObjectId] = {}
        self.same_film: dict[int, int] = {}  # MovieLens id -> the one that stands for its film
        self.merged_into: set[PydanticObjectId] = set()  # records that took another's ratings
        self.user_ids: dict[int, PydanticObjectId] = {}
        self.new_users: set[PydanticObjectId] = set()
        # Existing ratings of the users in the current batch (files are grouped by user).
        self._existing: dict[
            PydanticObjectId, dict[PydanticObjectId, tuple[PydanticObjectId, float, datetime]]
        ] = {}

    async def run(self) -> ImportReport:
        """Import the release (under the lease when one is given: LeaseBusy before any
        write while another import holds it, LeaseLost when it was lost half-way)."""
        if self.lease is None:
            return await self._run()
        async with self.lease.held():
            return await self._run()

    async def _run(self) -> ImportReport:
        names = [*FILES, *(n for n in OPTIONAL_FILES if self.release.has(n))]
        for name in names:
            self.report.progress[name] = FileProgress(total=self.release.count_rows(name))
        links = await self._timed("links.csv", self._read_links)
        await self._timed("movies.csv", lambda: self._import_movies(links))
        await self._timed("ratings.csv", self._import_ratings)
        if self.release.has("tags.csv"):
            await self._timed("tags.csv", self._count_tags)
        if not self.dry_run:
            started = time.perf_counter()
            if self.lease is not None:
                await self.lease.confirm()
            await summaries.finish_import(
                job_id=self.intent_tag,
                prior_votes=self.prior_votes,
                settle=self.drain_settle,
                phases=self,
            )
            self.report.timings["aggregation"] = round(time.perf_counter() - started, 3)
        return self.report

    async def started(self, name: str, total: int) -> None:
        """A phase after the files (summaries, weighted scores) begins: a progress item."""
        self.report.progress[name] = FileProgress(total=total)
        await self.hooks.file_started(name, total)
        await self.hooks.advanced(name, 0, self.report)  # shown as begun, not only when done
        if total == 0:
            await self.hooks.file_finished(name, self.report)

    async def advanced(self, name: str, done: int) -> None:
        """A phase got `done` items further; its end is saved at once."""
        progress = self.report.progress[name]
        progress.done = min(progress.total, progress.done + done)
        await self.hooks.advanced(name, done, self.report)
        if progress.done >= progress.total:
            await self.hooks.file_finished(name, self.report)

    async def _timed(self, name: str, step: Any) -> Any:
        await self.hooks.file_started(name, self.report.progress[name].total)
        started = time.perf_counter()
        result = await step()
        self.report.timings[name] = round(time.perf_counter() - started, 3)
        await self.hooks.file_finished(name, self.report)
        return result

    async def _good_rows(self, name: str) -> AsyncIterator[list[Any]]:
        """Each batch's parsed rows, bad lines counted; progress and cancellation after it."""
        with self.release.batches(name, self.batch_size) as batches:
            for batch in batches:
                good = []
                for line, row in batch:
                    if isinstance(row, str):
                        self.report.bad(name, line, row)
                    else:
                        good.append((line, row))
                yield good
                await self._advance(name, len(batch))

    async def _advance(self, name: str, rows: int) -> None:
        self.report.progress[name].done += rows
        await self.hooks.advanced(name, rows, self.report)
        if await self.hooks.cancelled():
            raise ImportCancelled()
        if self.lease is not None:
            await self.lease.confirm()  # before the next batch writes

    # links.csv: small (one row per movie), kept in memory to join onto movies.csv

    async def _read_links(self) -> dict[int, LinkRow]:
        links: dict[int, LinkRow] = {}
        async for rows in self._good_rows("links.csv"):
            links.update((row.movielens, row) for _, row in rows)
        self.same_film = same_films(links)
        return links

    async def _import_movies(self, links: dict[int, LinkRow]) -> None:
        name = "movies.csv"
        async for rows in self._good_rows(name):
            wanted: dict[int, dict[str, Any]] = {}
            for line, row in rows:
                if row.movielens in wanted or row.movielens in self.movie_ids:
                    self.report.bad(name, line, f"duplicate movieId {row.movielens}")
                    continue
                if row.movielens in self.same_film:  # rated onto the film's first record
                    self.report.merged += 1
                    continue
                link = links.get(row.movielens)
                wanted[row.movielens] = {
                    **title_fields(row.title),
                    "source_title": row.source_title or row.title,
                    "year": row.year,
                    "genres": row.genres,
                    "external_ids": {
                        "movielens": row.movielens,
                        "imdb": link.imdb if link else None,
                        "tmdb": link.tmdb if link else None,
                    },
                }
            await self._write_movies(wanted)

    async def _write_movies(self, wanted: dict[int, dict[str, Any]]) -> None:
        if not wanted:
            return
        compared = (
            "title", "aliases", "search_names", "search_terms", "source_title", "year", "genres",
            "external_ids",
        )  # fmt: skip
        projection = {key: 1 for key in compared}
        existing = await movie_store.by_movielens_ids(list(wanted), projection)
        existing.update(await self._same_films(wanted, existing, projection))
        now = utcnow()
        inserts: dict[int, dict[str, Any]] = {}
        updates: dict[Any, dict[str, Any]] = {}
        for movie_id, want in wanted.items():
            have = existing.get(movie_id)
            if have is None:
                inserts[movie_id] = Movie(**want).model_dump(by_alias=True, exclude={"id"})
                self.report.movies.inserted += 1
                continue
            self.movie_ids[movie_id] = have["_id"]
            current = {k: have.get(k) for k in compared}
            target = {k: want[k] for k in current}
            if current == target:
                self.report.movies.unchanged += 1
            else:
                updates[have["_id"]] = {**want, "updated_at": now}
                self.report.movies.updated += 1
        if self.dry_run:
            # Stand-in ids: a dry run writes nothing, its ratings only need movies told apart.
            self.movie_ids.update((movie_id, PydanticObjectId()) for movie_id in inserts)
            return
        await movie_store.set_each(updates)
        inserted = await movie_store.insert_imported(inserts)
        self.movie_ids.update(inserted)
        if inserts or updates:
            await self.hooks.movies_written(inserted=list(inserted.values()), updated=list(updates))

    async def _same_films(
        self,
        wanted: dict[int, dict[str, Any]],
        found: dict[int, Any],
        projection: dict[str, int],
    ) -> dict[int, Any]:
        """Catalogue records with no MovieLens id that are the same film as a wanted row: by
        IMDb id, then TMDb id, then (title, year). They take the MovieLens id instead of a
        second record being made (the shipped sample, films added through the API)."""
        matched: dict[int, Any] = {}
        taken: set[Any] = set()

        def claim(movie_id: int | None, doc: dict[str, Any]) -> None:
            if movie_id is not None and movie_id not in matched and doc["_id"] not in taken:
                matched[movie_id] = doc
                taken.add(doc["_id"])

        def open_rows() -> list[tuple[int, dict[str, Any]]]:
            return [(m, w) for m, w in wanted.items() if m not in found and m not in matched]

        for source in ("imdb", "tmdb"):
            keys: dict[Any, int] = {}
            for movie_id, want in open_rows():
                if want["external_ids"].get(source) is not None:
                    keys.setdefault(want["external_ids"][source], movie_id)
            path = f"external_ids.{source}"
            for doc in await movie_store.unlinked_matching(path, list(keys), projection):
                claim(keys.get(doc["external_ids"].get(source)), doc)
        by_title: dict[tuple[str, Any], int] = {}
        for movie_id, want in open_rows():
            by_title.setdefault((want["title_key"], want["year"]), movie_id)
        titles = sorted({title for title, _ in by_title})
        for doc in await movie_store.unlinked_matching(
            "title_key", titles, {**projection, "title_key": 1}
        ):
            claim(by_title.get((doc["title_key"], doc.get("year"))), doc)
        return matched

    # ratings.csv: the large file, grouped by user in every MovieLens release

    async def _import_ratings(self) -> None:
        name = "ratings.csv"
        for merged, kept in self.same_film.items():
            if kept in self.movie_ids:
                self.movie_ids[merged] = self.movie_ids[kept]
                self.merged_into.add(self.movie_ids[kept])
        async for rows in self._good_rows(name):
            parsed: list[tuple[int, PydanticObjectId, float, datetime]] = []
            for line, row in rows:
                if row.movie not in self.movie_ids:
                    self.report.bad(name, line, f"unknown movieId {row.movie}")
                else:
                    movie = self.movie_ids[row.movie]
                    parsed.append((row.user, movie, row.score, row.rated_at))
            await self._write_ratings(parsed)

    async def _resolve_users(self, movielens_ids: set[int]) -> None:
        missing = [u for u in movielens_ids if u not in self.user_ids]
        if not missing:
            return
        found = await user_store.ids_by_movielens(missing)
        self.user_ids.update(found)
        self.report.users.unchanged += len(found)
        new: dict[int, dict[str, Any]] = {}
        for movielens_id in missing:
            if movielens_id in self.user_ids:
                continue
            user = User(
                username=imported_username(movielens_id),
                display_name=f"MovieLens user {movielens_id}",
                external_ids={"movielens": movielens_id},
            )
            new[movielens_id] = user.model_dump(by_alias=True, exclude={"id"})
        self.report.users.inserted += len(new)
        if self.dry_run:
            # Stand-in ids, as for movies.
            ids = {movielens_id: PydanticObjectId() for movielens_id in new}
        else:
            try:
                ids = await user_store.insert_imported(new)
            except Duplicate as exc:
                raise ReleaseError(
                    f"A {exc.field or 'username'} the import needs is taken by another account."
                ) from None
        self.user_ids.update(ids)
        self.new_users.update(ids.values())

    async def _load_existing(self, users: set[PydanticObjectId]) -> None:
        # MovieLens files are grouped by user, so a small cache holds everyone still to come;
        # an evicted user who does come back is read again from the database.
        if len(self._existing) > _USER_CACHE:
            for user in [u for u in self._existing if u not in users]:
                del self._existing[user]
                self.new_users.discard(user)
        wanted = [u for u in users if u not in self._existing and u not in self.new_users]
        for user in users:
            self._existing.setdefault(user, {})
        if not wanted:
            return
        async for doc in rating_store.of_users(wanted):
            self._existing[doc["user_id"]][doc["movie_id"]] = (
                doc["_id"],
                doc["score"],
                doc["rated_at"],
            )

    async def _write_ratings(
        self, parsed: list[tuple[int, PydanticObjectId, float, datetime]]
    ) -> None:
        if not parsed:
            return
        await self._resolve_users({p[0] for p in parsed})
        users = {self.user_ids[p[0]] for p in parsed}
        await self._load_existing(users)
        inserts: list[dict[str, Any]] = []
        updates: dict[Any, dict[str, Any]] = {}
        touched_movies: set[PydanticObjectId] = set()
        touched_users: set[PydanticObjectId] = set()
        for movielens_user, movie, score, rated_at in parsed:
            user = self.user_ids[movielens_user]
            have = self._existing[user].get(movie)
            if have is not None and movie in self.merged_into and have[2] > rated_at:
                # Rated under two records of one film: the newer rating stands, run after run.
                self.report.ratings.unchanged += 1
                continue
            if have is None:
                rating_id = PydanticObjectId()
                inserts.append(
                    {
                        "_id": rating_id,
                        "movie_id": movie,
                        "user_id": user,
                        "score": score,
                        "rated_at": rated_at,
                        "updated_at": rated_at,
                    }
                )
                self._existing[user][movie] = (rating_id, score, rated_at)
                self.report.ratings.inserted += 1
            elif have[1] == score and have[2] == rated_at:
                self.report.ratings.unchanged += 1
                continue
            else:
                change = {"score": score, "rated_at": rated_at, "updated_at": rated_at}
                pending = next((d for d in inserts if d["_id"] == have[0]), None)
                if pending is not None:  # the other record's rating, inserted in this batch
                    pending.update(change)
                    self._existing[user][movie] = (have[0], score, rated_at)
                    self.report.ratings.unchanged += 1  # one film, one rating: stored once
                    continue
                updates[have[0]] = change
                self._existing[user][movie] = (have[0], score, rated_at)
                self.report.ratings.updated += 1
            touched_movies.add(movie)
            touched_users.add(user)
        if self.dry_run or not touched_movies:
            return
        # The intent first: a crash after the ratings are written still ends recomputed.
        await summaries.record_intent(
            movie_ids=touched_movies, user_ids=touched_users, job_id=self.intent_tag
        )
        # A duplicate here is an error, not a race to ignore: only this import writes (the
        # lease), and it read the users' existing ratings first.
        await rating_store.write_imported(inserts, updates)
        # After the write, so a training that read before this batch is found stale.
        await model_store.ratings_imported()

    async def _count_tags(self) -> None:
        # Tags are validated and counted; the product has no use for them yet.
        async for rows in self._good_rows("tags.csv"):
            self.report.tags += len(rows)
