"""Services: keyword-only async functions that own every query."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of results; `next_offset` is None on the last page."""

    items: list[T]
    next_offset: int | None


def page_of(rows: list[T], *, offset: int, limit: int) -> Page[T]:
    """Build a Page from a query that fetched limit + 1 rows."""
    more = len(rows) > limit
    return Page(items=rows[:limit], next_offset=offset + limit if more else None)
