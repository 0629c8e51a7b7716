"""This process's copy of hot public responses (the near cache), served before routing."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

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
