"""This process's copy of hot public responses (the near cache), served before routing."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class NearEntry:
    """A whole public response, as this process last served it."""

    expires: float
    version: str
    stamp: tuple[int, int]
    body: bytes
    etag: str
    cache_control: str


class NearCache:
    """This process's copy of hot public responses, keyed by URL: served before routing
    checks, validation or Redis.

    Entries are stamped with the local generation of their version key (and a local epoch)
    taken before their value was read. Every invalidation bumps the generation here at once
    (this process's writes) or when the Redis channel announces it (other processes'
    writes), so an entry read before an invalidation never matches afterwards. It is used
    only while subscribed: a dropped subscription may have missed invalidations, so
    resubscribing starts from empty. `ttl` bounds what a lost message could cost.
    """

    def __init__(self, *, ttl: float, max_entries: int = 20_000) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._entries: dict[str, NearEntry] = {}
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
        if entry is None or entry.stamp != self.stamp(entry.version):
            return None
        if entry.expires < time.monotonic():
            del self._entries[url]
            return None
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
        if len(self._entries) >= self._max:
            self.reset()  # crude but safe: a new epoch, nothing stale survives
            return
        expires = time.monotonic() + self._ttl
        self._entries[url] = NearEntry(expires, version, stamp, body, etag, cache_control)

    def invalidate(self, version_keys: Iterable[str], *, epoch_key: str) -> None:
        for version_key in version_keys:
            if version_key == epoch_key:
                self.reset()
            else:
                self._generations[version_key] = self._generations.get(version_key, 0) + 1

    def reset(self) -> None:
        self._entries.clear()
        self._generations.clear()
        self._epoch += 1
