"""Pacing of background work on a database that serves people at the same time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

# The longest single rest: results stay fresh under any load.
REST_MAX = 4.0


async def never() -> bool:
    """No one else did this work."""
    return False


class Pace:
    """Rests so that the work between rests keeps the database busy at most `duty` of the
    time (resting at most `rest_max` at once, so results stay fresh), while `others_busy`
    says people are waiting on the database; with nobody waiting it does not rest."""

    def __init__(
        self,
        duty: float,
        *,
        rest_max: float = REST_MAX,
        others_busy: Callable[[], Awaitable[bool]] | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.duty = duty
        self.rest_max = rest_max
        self._others_busy = others_busy
        self._clock = clock
        self._sleep = sleep
        self._busy_since = clock()
        # Asked after every rest: True when someone else already did this work (an import's
        # last step moved the drain's mark past the round's writes), and the round stops.
        self.overtaken: Callable[[], Awaitable[bool]] = never

    async def rest(self, *, at_least: float = 0.0) -> None:
        """Sleep in proportion to the time worked since the last rest."""
        worked = self._clock() - self._busy_since
        share = min(worked * (1 / self.duty - 1), self.rest_max)
        if self._others_busy is not None and not await self._others_busy():
            share = 0.0
        await self._sleep(max(share, at_least))
        self._busy_since = self._clock()
