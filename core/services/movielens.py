"""Writing a MovieLens release into the catalogue: streaming, batched, idempotent upserts
keyed by MovieLens ids.

Every batch reads what already exists for its keys with one index-served query, then writes
only the difference: new movies and users as upserts on their MovieLens id (their ids are read
back from the database, never chosen before the write), new ratings with insert_many, changed
ones with one bulk write, and nothing for unchanged ones. Running the same release twice
therefore writes nothing, and a run that was killed half-way can simply be run again.

A writing run holds the import lease (core.services.leases) from its first write to its
last, and confirms it after every batch: two imports never write at once, and one that
stalled past its lease stops before its next batch.

The rows come parsed from a `Release` (the dataset readers in `seed` implement it): this
module owns the queries, not the file formats.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from bson import ObjectId
from pymongo import UpdateOne
from pymongo.errors import BulkWriteError

from core.names import imported_username
from core.search import title_fields
from core.services import aggregation, chunked
from core.services.leases import FencedLease
from models import ImportReport, Movie, Rating, User, utcnow
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


class ImportCancelled(Exception):
    """The operator cancelled the job; what was written so far stays (and is consistent)."""


class Hooks:
    """Progress and cancellation callbacks; the CLI draws bars, a job writes its document."""

    async def file_started(self, name: str, total: int) -> None:
        """Called before a file is read, with its number of data rows."""

    async def advanced(self, name: str, rows: int, report: ImportReport) -> None:
        """Called after each batch with the rows it covered."""

    async def movies_written(self, *, inserted: list[ObjectId], updated: list[ObjectId]) -> None:
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
        job_id: ObjectId | None = None,
        lease: FencedLease | None = None,
    ) -> None:
        self.release = release
        # Held (acquired, renewed, confirmed after each batch) by a run that writes.
        self.lease = None if dry_run else lease
        # Tags this run's recompute intents: the job's id, so a resumed job finishes what an
        # earlier attempt wrote, and the drain leaves them alone while the job runs.
        self.intent_tag = job_id or ObjectId()
        self.hooks = hooks or Hooks()
        self.dry_run = dry_run
        self.batch_size = batch_size
        self.prior_votes = prior_votes
        self.drain_settle = drain_settle
        self.report = ImportReport()
        self.movie_ids: dict[int, ObjectId] = {}
        self.user_ids: dict[int, ObjectId] = {}
        self.new_users: set[ObjectId] = set()
        # Existing ratings of the users in the current batch (files are grouped by user).
        self._existing: dict[ObjectId, dict[ObjectId, tuple[ObjectId, float, datetime]]] = {}

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
            await aggregation.finish_import(
                job_id=self.intent_tag, prior_votes=self.prior_votes, settle=self.drain_settle
            )
            self.report.timings["aggregation"] = round(time.perf_counter() - started, 3)
        return self.report

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
        return links

    async def _import_movies(self, links: dict[int, LinkRow]) -> None:
        name = "movies.csv"
        collection = Movie.get_motor_collection()
        async for rows in self._good_rows(name):
            wanted: dict[int, dict[str, Any]] = {}
            for line, row in rows:
                if row.movielens in wanted or row.movielens in self.movie_ids:
                    self.report.bad(name, line, f"duplicate movieId {row.movielens}")
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
            await self._write_movies(collection, wanted)

    async def _write_movies(self, collection: Any, wanted: dict[int, dict[str, Any]]) -> None:
        if not wanted:
            return
        compared = (
            "title", "aliases", "search_names", "search_terms", "source_title", "year", "genres",
            "external_ids",
        )  # fmt: skip
        projection = {key: 1 for key in compared}
        existing = {}
        for part in chunked(wanted):
            async for doc in collection.find({"external_ids.movielens": {"$in": part}}, projection):
                existing[doc["external_ids"]["movielens"]] = doc
        existing.update(await self._same_films(collection, wanted, existing, projection))
        now = utcnow()
        inserts: dict[int, dict[str, Any]] = {}
        updates, updated_ids = [], []
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
                updates.append(
                    UpdateOne({"_id": have["_id"]}, {"$set": {**want, "updated_at": now}})
                )
                updated_ids.append(have["_id"])
                self.report.movies.updated += 1
        if self.dry_run:
            # Stand-in ids: a dry run writes nothing, its ratings only need movies told apart.
            self.movie_ids.update((movie_id, ObjectId()) for movie_id in inserts)
            return
        if updates:
            await collection.bulk_write(updates, ordered=False)
        inserted = await _insert_by_movielens_id(collection, inserts)
        self.movie_ids.update(inserted)
        if inserts or updates:
            await self.hooks.movies_written(inserted=list(inserted.values()), updated=updated_ids)

    async def _same_films(
        self,
        collection: Any,
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
            for part in chunked(list(keys)):
                flt = {f"external_ids.{source}": {"$in": part}, "external_ids.movielens": None}
                async for doc in collection.find(flt, projection):
                    claim(keys.get(doc["external_ids"].get(source)), doc)
        by_title: dict[tuple[str, Any], int] = {}
        for movie_id, want in open_rows():
            by_title.setdefault((want["title_key"], want["year"]), movie_id)
        for part in chunked(sorted({title for title, _ in by_title})):
            flt = {"title_key": {"$in": part}, "external_ids.movielens": None}
            async for doc in collection.find(flt, {**projection, "title_key": 1}):
                claim(by_title.get((doc["title_key"], doc.get("year"))), doc)
        return matched

    # ratings.csv: the large file, grouped by user in every MovieLens release

    async def _import_ratings(self) -> None:
        name = "ratings.csv"
        async for rows in self._good_rows(name):
            parsed: list[tuple[int, ObjectId, float, datetime]] = []
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
        collection = User.get_motor_collection()
        for part in chunked(missing):
            query = {"external_ids.movielens": {"$in": part}}
            async for doc in collection.find(query, {"_id": 1, "external_ids": 1}):
                self.user_ids[doc["external_ids"]["movielens"]] = doc["_id"]
                self.report.users.unchanged += 1
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
            ids = {movielens_id: ObjectId() for movielens_id in new}
        else:
            try:
                ids = await _insert_by_movielens_id(collection, new)
            except BulkWriteError as exc:
                taken = [e for e in exc.details.get("writeErrors", []) if e.get("code") == 11000]
                if not taken:
                    raise
                raise ReleaseError(
                    "A username the import needs is taken by another account: "
                    f"{taken[0].get('errmsg', 'duplicate key')}"
                ) from None
        self.user_ids.update(ids)
        self.new_users.update(ids.values())

    async def _load_existing(self, users: set[ObjectId]) -> None:
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
        projection = {"movie_id": 1, "user_id": 1, "score": 1, "rated_at": 1}
        for part in chunked(wanted):
            async for doc in Rating.get_motor_collection().find(
                {"user_id": {"$in": part}}, projection
            ):
                self._existing[doc["user_id"]][doc["movie_id"]] = (
                    doc["_id"],
                    doc["score"],
                    doc["rated_at"],
                )

    async def _write_ratings(self, parsed: list[tuple[int, ObjectId, float, datetime]]) -> None:
        if not parsed:
            return
        await self._resolve_users({p[0] for p in parsed})
        users = {self.user_ids[p[0]] for p in parsed}
        await self._load_existing(users)
        inserts: list[dict[str, Any]] = []
        updates: list[UpdateOne] = []
        touched_movies: set[ObjectId] = set()
        touched_users: set[ObjectId] = set()
        for movielens_user, movie, score, rated_at in parsed:
            user = self.user_ids[movielens_user]
            have = self._existing[user].get(movie)
            if have is None:
                rating_id = ObjectId()
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
                updates.append(UpdateOne({"_id": have[0]}, {"$set": change}))
                self._existing[user][movie] = (have[0], score, rated_at)
                self.report.ratings.updated += 1
            touched_movies.add(movie)
            touched_users.add(user)
        if self.dry_run or not touched_movies:
            return
        # The intent first: a crash after the ratings are written still ends recomputed.
        await aggregation.record_intent(
            movie_ids=touched_movies, user_ids=touched_users, job_id=self.intent_tag
        )
        ratings = Rating.get_motor_collection()
        # insert_many is several times faster than the same inserts inside a bulk_write. A
        # duplicate here is an error, not a race to ignore: only this import writes (lease),
        # and it read the users' existing ratings first.
        if inserts:
            await ratings.insert_many(inserts, ordered=False)
        if updates:
            await ratings.bulk_write(updates, ordered=False)

    async def _count_tags(self) -> None:
        # Tags are validated and counted; the product has no use for them yet.
        async for rows in self._good_rows("tags.csv"):
            self.report.tags += len(rows)


async def _insert_by_movielens_id(
    collection: Any, docs: dict[int, dict[str, Any]]
) -> dict[int, ObjectId]:
    """Store documents new to the catalogue as upserts on their MovieLens id and return the
    ids the database holds for them: a document someone stored first is kept, not doubled,
    and no id is used that the database did not store."""
    if not docs:
        return {}
    key = "external_ids.movielens"

    def fields(doc: dict[str, Any]) -> dict[str, Any]:
        # The filter seeds external_ids.movielens; the other ids go in as dotted paths.
        rest = {k: v for k, v in doc.items() if k != "external_ids"}
        others = doc.get("external_ids") or {}
        rest.update({f"external_ids.{k}": v for k, v in others.items() if k != "movielens"})
        return rest

    await collection.bulk_write(
        [UpdateOne({key: mlid}, {"$setOnInsert": fields(doc)}, upsert=True)
         for mlid, doc in docs.items()],
        ordered=False,
    )  # fmt: skip
    stored: dict[int, ObjectId] = {}
    for part in chunked(list(docs)):
        async for doc in collection.find({key: {"$in": part}}, {"_id": 1, key: 1}):
            stored[doc["external_ids"]["movielens"]] = doc["_id"]
    if len(stored) != len(docs):
        raise RuntimeError(f"{len(docs) - len(stored)} upserted documents cannot be read back")
    return stored
