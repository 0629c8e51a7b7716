"""Services: keyword-only async functions that own every query and raise domain errors."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from pymongo.errors import DuplicateKeyError

from core.db import server_profile

T = TypeVar("T")


def duplicate_field(exc: DuplicateKeyError) -> str | None:
    """The first field of the unique index a write collided with (the server's keyPattern)."""
    pattern = (exc.details or {}).get("keyPattern") or {}
    return next(iter(pattern), None)


def chunked(items: Iterable[T], size: int | None = None) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items; by default as many as one $in may hold on
    the server in use (see `core.db.ServerProfile`)."""
    size = size or server_profile().in_list_max
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of results; `next_offset` is None on the last page."""

    items: list[T]
    next_offset: int | None


def page_of(rows: list[T], *, offset: int, limit: int) -> Page[T]:
    """Build a Page from a query that fetched limit + 1 rows."""
    more = len(rows) > limit
    return Page(items=rows[:limit], next_offset=offset + limit if more else None)
