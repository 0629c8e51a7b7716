"""Pages and chunks: the keyset paging every list reads through, and `$in` lists cut to the
server's size. Ranges only, never $or or $and: not every server uses an index for those."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Generic, TypeVar

from bson import json_util

from core.store.profile import server_profile

T = TypeVar("T")


def chunked(items: Iterable[T], size: int | None = None) -> Iterator[list[T]]:
    """Consecutive lists of at most `size` items; by default as many as one $in may hold on
    the server in use (see `core.store.profile`)."""
    size = size or server_profile().in_list_max
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


ASC, DESC = 1, -1
Sort = list[tuple[str, int]]  # a field and then _id: a total order
Position = tuple[Any, Any]  # the sort field's value and the _id of a page's last row
Find = Callable[[dict[str, Any], Sort, int, int], Awaitable[list[T]]]  # filter, sort, skip, limit


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """A page of results; `after` is where the next one starts, None on the last page."""

    items: list[T]
    after: Position | None = None


def _merged(flt: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any] | None:
    """`flt` with `extra`'s conditions too, in one document (never $and: SecantusDB would
    not use an index for it); conditions on one field join into one operator document.
    None when both cannot hold."""
    out = dict(flt)
    for field, cond in extra.items():
        have = out.get(field)
        if have is None:
            out[field] = cond
            continue
        if isinstance(have, dict) and not isinstance(cond, dict):
            # The value of a row this list showed, so inside the client's range: the
            # equality alone says it (SecantusDB reads no index for $eq beside a range).
            # Rows without a value are in no range.
            if cond is None:
                return None
            out[field] = cond
            continue
        have = have if isinstance(have, dict) else {"$eq": have}
        add = cond if isinstance(cond, dict) else {"$eq": cond}
        out[field] = {**add, **have}  # on one operator the client's own filter wins
    return out


def keyset_parts(sort: Sort, after: Position, *, nullable: bool) -> list[tuple[dict, Sort]]:
    """The ranges that together hold every row after `after`, in order, each an index range
    on (field, _id): the rest of `after`'s value, the values beyond it, and the rows without
    a value (servers sort them below every number). No $or: not every server keeps an index
    for one."""
    (field, direction), (_, id_direction) = sort
    value, last_id = after
    by_id: Sort = [("_id", id_direction)]
    parts = [({field: value, "_id": {"$gt" if id_direction > 0 else "$lt": last_id}}, by_id)]
    if value is None:
        if direction > 0:  # numbers come after the rows without a value
            parts.append(({field: {"$gte": float("-inf")}}, sort))
    else:
        parts.append(({field: {"$gt" if direction > 0 else "$lt": value}}, sort))
        if direction < 0 and nullable:
            parts.append(({field: None}, by_id))
    return parts


def paged(rows: list[T], *, limit: int, position: Callable[[T], Position]) -> Page[T]:
    """A Page from rows fetched with limit + 1."""
    if len(rows) > limit:
        return Page(items=rows[:limit], after=position(rows[limit - 1]))
    return Page(items=rows)


async def keyset_page(
    find: Find[T],
    *,
    flt: dict[str, Any],
    sort: Sort,
    after: Position | None,
    limit: int,
    position: Callable[[T], Position],
    offset: int = 0,
    nullable: bool = False,
) -> Page[T]:
    """A page of `limit` rows in `sort` order after `after` (else after the first `offset`),
    read by `find(filter, sort, skip, limit)` from index ranges: page 500 costs what page 1
    costs, and a page never repeats or skips a row while others move."""
    if after is None:
        rows = await find(flt, sort, offset, limit + 1)
        return paged(rows, limit=limit, position=position)
    rows = []
    for extra, part_sort in keyset_parts(sort, after, nullable=nullable):
        part = _merged(flt, extra)
        if part is not None:
            rows.extend(await find(part, part_sort, 0, limit + 1 - len(rows)))
        if len(rows) > limit:
            break
    return paged(rows, limit=limit, position=position)


# Positions hold what the server sorts by (ids, dates, numbers): Extended JSON keeps their types.
_POSITION_JSON = json_util.JSONOptions(
    json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC
)


def dump_position(scope: str, position: Any) -> bytes:
    """A list's name and a position in it, as bytes (for a signed cursor)."""
    return json_util.dumps([scope, position], json_options=_POSITION_JSON).encode()


def load_position(data: bytes) -> tuple[str, Any]:
    """The list name and position `dump_position` wrote; ValueError for anything else."""
    scope, position = json_util.loads(data, json_options=_POSITION_JSON)
    return scope, position
