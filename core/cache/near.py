"""What a process keeps of its own, in step with every process's invalidations: its copy of
hot public responses (`NearCache`, served before routing), the movies it saw exist
(`KnownMovies`), and the subscription that keeps both current (`follow_invalidations`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import RedisError

if TYPE_CHECKING:
    from core.cache.aside import Cache

# What an entry holds beyond its body and URL: its object, stamp, ETag and dict slot.
ENTRY_OVERHEAD = 400


@dataclass(frozen=True, slots=True)
class NearEntry:
    """A whole public response, as this process last served it."""

    expires: float
    version: str
    stamp: tuple[int, int]
    body: bytes
    etag: str
    cache_control: str

    def size(self, url: str) -> int:
        return len(self.body) + len(url) + ENTRY_OVERHEAD


class NearCache:
    """This process's copy of hot public responses, keyed by URL: served before routing
    checks, validation or Redis.

    Entries are stamped with the local generation of their version key (and a local epoch)
    taken before their value was read. Every invalidation bumps the generation here at once
    (this process's writes) or when the Redis channel announces it (other processes'
    writes), so an entry read before an invalidation never matches afterwards. It is used
    only while subscribed: a dropped subscription may have missed invalidations, so
    resubscribing starts from empty. `ttl` bounds what a lost message could cost, and
    `max_bytes` what the entries hold: past it the least recently used go first.
    """

    def __init__(self, *, ttl: float, max_bytes: int) -> None:
        self._ttl = ttl
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, NearEntry] = OrderedDict()
        self.size = 0  # bytes the entries hold (bodies, URLs and a fixed overhead each)
        self._generations: dict[str, int] = {}
        self._epoch = 0
        self.live = False
        self.hits = 0  # since the last flush to the shared counters

    def stamp(self, version: str) -> tuple[int, int]:
        return (self._epoch, self._generations.get(version, 0))

    def get(self, url: str) -> NearEntry | None:
        if not self.live:
            return None
        entry = self._entries.get(url)
        if entry is None:
            return None
        if entry.stamp != self.stamp(entry.version) or entry.expires < time.monotonic():
            self._drop(url)
            return None
        self._entries.move_to_end(url)
        self.hits += 1
        return entry

    def put(
        self,
        url: str,
        *,
        version: str,
        stamp: tuple[int, int],
        body: bytes,
        etag: str,
        cache_control: str,
    ) -> None:
        if not self.live or stamp != self.stamp(version):
            return  # invalidated while it was read: do not keep it
        entry = NearEntry(time.monotonic() + self._ttl, version, stamp, body, etag, cache_control)
        if entry.size(url) > self._max_bytes:
            return
        self._drop(url)
        self._entries[url] = entry
        self.size += entry.size(url)
        while self.size > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, url: str) -> None:
        entry = self._entries.pop(url, None)
        if entry is not None:
            self.size -= entry.size(url)

    def invalidate(self, version_keys: Iterable[str], *, epoch_key: str) -> None:
        for version_key in version_keys:
            if version_key == epoch_key:
                self.reset()
            else:
                self._generations[version_key] = self._generations.get(version_key, 0) + 1

    def reset(self) -> None:
        self._entries.clear()
        self.size = 0
        self._generations.clear()
        self._epoch += 1


class KnownMovies:
    """Movie ids this process has seen exist, so a new rating can skip the database's word
    on it. Trusted only while the invalidation channel is live; forgotten when any process
    deletes the movie, and after `ttl` in any case (a lost message costs at most that). A
    rating accepted for a movie deleted meanwhile carries its recompute stamp like any other:
    the drain finds the movie gone and removes the rating with it."""

    def __init__(self, *, ttl: float = 60.0, max_entries: int = 50_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._until: dict[str, float] = {}
        self.live = False

    def known(self, movie_id: Any) -> bool:
        until = self._until.get(str(movie_id))
        return self.live and until is not None and until > time.monotonic()

    def seen(self, movie_id: Any) -> None:
        if len(self._until) >= self._max:
            self._until.clear()
        self._until[str(movie_id)] = time.monotonic() + self._ttl

    def forget(self, movie_ids: Iterable[Any]) -> None:
        for movie_id in movie_ids:
            self._until.pop(str(movie_id), None)

    def reset(self) -> None:
        self._until.clear()


# Seconds between looks at the channel, and between flushes of this process's hit count.
POLL = 1.0


async def follow_invalidations(cache: Cache, stop: asyncio.Event) -> None:
    """Keep this process's near cache and known movies in step with every process's
    invalidations, until `stop`; both are trusted only while subscribed (a dropped
    subscription may have missed messages, so resubscribing starts them from empty)."""
    near, known, keys = cache.near, cache.known_movies, cache.keys
    if near is None:
        return
    # `stop` and not only Task.cancel(): a cancellation that lands as redis-py's read
    # timeout expires comes back as "no message", and a loop relying on it never ends.
    while not stop.is_set():
        try:
            async with cache.redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                await pubsub.subscribe(keys.channel)
                near.reset()
                known.reset()
                near.live = known.live = True
                flushed = time.monotonic()
                while not stop.is_set():
                    message = await pubsub.get_message(timeout=POLL)
                    if message is not None:
                        names = message["data"].decode().split()
                        near.invalidate(names, epoch_key=keys.epoch)
                        deleted = keys.deleted_movie
                        known.forget(
                            n.removeprefix(deleted) for n in names if n.startswith(deleted)
                        )
                    if near.hits and time.monotonic() - flushed >= POLL:
                        # This process's hits join the shared counters once a second.
                        hits, near.hits = near.hits, 0
                        flushed = time.monotonic()
                        await cache.redis.hincrby(keys.stats, "near_hits", hits)
        except (RedisError, OSError) as exc:
            near.live = known.live = False
            cache.health.failed(exc)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=POLL)
        finally:
            near.live = known.live = False
