"""Services: keyword-only async functions that own every query."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

# SecantusDB matches $in by scanning its list for every document, so a long list costs
# quadratically (5,000 ids: 15 s; 100 ids: 13 ms). Long lists are sent in chunks of this size.
IN_CHUNK = 100


def chunked(items: Iterable[T], size: int = IN_CHUNK) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items."""
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
