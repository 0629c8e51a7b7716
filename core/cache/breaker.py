"""A breaker for Redis shared by the cache, the queue, the rate limits and the load meter:
after a failure Redis is left alone for a cool-down, and an outage is logged once."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("core.cache")

# Seconds Redis is left alone after a failure, unless the caller says otherwise.
COOLDOWN = 1.0


class RedisHealth:
    """A breaker shared by the cache and the queue: after a failure, leave Redis alone for
    `cooldown` seconds; log the outage once and its end once."""

    def __init__(self, cooldown: float = COOLDOWN) -> None:
        self._cooldown = cooldown
        self._retry_at = 0.0
        self.down = False

    @property
    def available(self) -> bool:
        return time.monotonic() >= self._retry_at

    def failed(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self._cooldown
        if not self.down:
            self.down = True
            log.warning(
                "redis unavailable: reads bypass the cache, aggregation is deferred",
                extra={"error": repr(exc)},
            )

    def succeeded(self) -> bool:
        """Record a working call; True when it ends an outage."""
        if not self.down:
            return False
        self.down = False
        log.warning("redis is back: cache and queue resume")
        return True
