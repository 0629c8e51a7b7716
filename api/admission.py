"""Admission control: what each request costs, each client's budget, and how many requests
each process lets reach the database at once. The whole policy lives here; its numbers are
settings (ADMISSION_*).

A request to the API (`/api/v1/…`) costs `ADMISSION_COST_READ` units, or
`ADMISSION_COST_HEAVY` when its shape reads more than an index range's first page: a
search, a filtered list, an offset. Units are taken, before any database work, from the
client's token bucket in Redis: per account or operator client when the request carries a
valid access token, else per address. An empty bucket is a 429 with Retry-After and the
RateLimit fields. Health, readiness, documentation and problem pages cost nothing, and a
response this process holds in its near cache is served before any of this runs.

Then each process bounds the admitted requests in flight (`ADMISSION_INFLIGHT`), of which
anonymous ones may hold `ADMISSION_ANONYMOUS_INFLIGHT` and anonymous heavy ones
`ADMISSION_ANONYMOUS_HEAVY_INFLIGHT`: past a bound the request is shed at once with a 503
and Retry-After, never queued behind a slow database, so the share left over stays free for
people who are logged in (logins are anonymous requests: a flood of guesses or sign-ups
cannot take the slots of people already logged in).

Buckets are the GCRA of `api.ratelimit` (one key, on Redis's clock). A round trip to Redis
costs a process about as much CPU as a cached read itself, so each process takes a client's
units a lease at a time (`Budgets`): the request's cost plus two seconds' refill, spent
locally for up to `LEASE_TTL` seconds; only then does it ask Redis again. Units are always
taken before they are spent, so leases never let a client past its budget; a lease that
expires unspent is lost, which refuses a client a little early, never late.

The `limits` library was weighed: its strategies are counting windows, where a
fixed window lets twice the budget through across a boundary and the moving window keeps
one list entry per unit of cost; a token bucket weighted by cost is what this needs.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from aiohttp import web
from aiohttp.typedefs import Handler

from api.appkeys import ADMISSION, BUDGETS, SETTINGS, TOKENS
from api.http import client_address
from api.middlewares import VERIFIED
from api.ratelimit import RateLimiter, Verdict
from core.errors import ServiceUnavailable, TooManyRequests, Unauthorized
from core.security import Principal
from core.settings import Settings

CHARGED_PREFIX = "/api/v1/"
# Query parameters that make a read more than one index range's first page.
HEAVY_PARAMS = frozenset({"q", "genre", "year_min", "year_max", "min_votes"})
SHED_RETRY_AFTER = 1  # seconds: a shed request finds room once one in flight ends
LEASE_SECONDS = 2  # a lease is the request's cost and this many seconds of refill
LEASE_TTL = 10.0  # seconds a process spends a client's leased units before asking again
LEASED_CLIENTS = 10_000  # clients one process holds leases for (least recently used go)


@dataclass(frozen=True, slots=True)
class Charge:
    """What one request costs and which in-flight shares it counts against."""

    units: int
    heavy: bool


@dataclass(frozen=True, slots=True)
class Client:
    """Whose budget a request draws on."""

    scope: str  # "address", "account" or "client"
    subject: str
    budget: int

    @property
    def anonymous(self) -> bool:
        return self.scope == "address"


def charge_for(request: web.Request, settings: Settings) -> Charge | None:
    """The cost of a request by its route and shape; None for what is free."""
    path = request.path
    if not path.startswith(CHARGED_PREFIX):
        return None
    query = request.query
    offset = query.get("offset", "")
    heavy = request.method == "GET" and (
        not HEAVY_PARAMS.isdisjoint(query.keys()) or offset.strip("0") != ""
    )
    units = settings.admission_cost_heavy if heavy else settings.admission_cost_read
    return Charge(units=units, heavy=heavy)


def client_of(request: web.Request, settings: Settings) -> Client:
    """The account or operator client of a valid bearer token, else the address."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        try:
            principal: Principal = request.app[TOKENS].verify(token.strip())
        except Unauthorized:
            pass  # answered by auth_middleware where a token is required; anonymous here
        else:
            request[VERIFIED] = principal
            scope = "client" if principal.is_client else "account"
            return Client(scope, principal.subject, settings.admission_budget_account)
    return Client("address", client_address(request), settings.admission_budget_address)


@dataclass(slots=True)
class _Lease:
    credit: int  # units taken from the bucket and not yet spent
    remaining: int  # what the bucket held after that take
    reset: int
    expires: float
    refused_until: float = 0.0  # the bucket was empty: refused here, no round trip


class Budgets:
    """Clients' budgets in Redis, taken a lease at a time by this process."""

    def __init__(self, limiter: RateLimiter, *, window: int) -> None:
        self._limiter = limiter
        self._window = window
        self._leases: OrderedDict[tuple[str, str], _Lease] = OrderedDict()

    async def charge(self, client: Client, cost: int) -> Verdict | None:
        """Take `cost` units of the client's budget; None when Redis cannot be asked."""
        key = (client.scope, client.subject)
        now = time.monotonic()
        lease = self._leases.get(key)
        if lease is not None and lease.refused_until > now:
            return Verdict(False, client.budget, 0, lease.reset)
        if lease is not None and lease.expires > now and lease.credit >= cost:
            lease.credit -= cost
            self._leases.move_to_end(key)
            return Verdict(True, client.budget, lease.remaining + lease.credit, lease.reset)
        self._leases.pop(key, None)
        extra = LEASE_SECONDS * client.budget // self._window
        verdict = await self._take(client, cost + extra)
        if verdict is not None and not verdict.allowed and extra and verdict.remaining >= cost:
            extra = 0  # near empty: the request alone still fits
            verdict = await self._take(client, cost)
        if verdict is None:
            return None
        if not verdict.allowed:
            if verdict.remaining == 0:
                # A flood past its budget meets this process alone for up to a second.
                until = now + min(verdict.reset, 1.0)
                self._hold(key, _Lease(0, 0, verdict.reset, now, refused_until=until))
            return verdict
        if extra:
            self._hold(key, _Lease(extra, verdict.remaining, verdict.reset, now + LEASE_TTL))
        return Verdict(True, client.budget, verdict.remaining + extra, verdict.reset)

    def _hold(self, key: tuple[str, str], lease: _Lease) -> None:
        self._leases[key] = lease
        if len(self._leases) > LEASED_CLIENTS:
            self._leases.popitem(last=False)

    async def _take(self, client: Client, units: int) -> Verdict | None:
        return await self._limiter.take(
            f"budget:{client.scope}",
            client.subject,
            burst=client.budget,
            window=self._window,
            cost=units,
        )


class InFlight:
    """Admitted requests running in this process, by share; past a share, shed at once."""

    def __init__(self, *, total: int, anonymous: int, anonymous_heavy: int) -> None:
        self.limits = (total, anonymous, anonymous_heavy)
        self.total = self.anonymous = self.anonymous_heavy = 0

    def _room(self, *, anonymous: bool, heavy: bool) -> bool:
        total, anonymous_limit, heavy_limit = self.limits
        if self.total >= total:
            return False
        if anonymous and self.anonymous >= anonymous_limit:
            return False
        return not (anonymous and heavy and self.anonymous_heavy >= heavy_limit)

    def enter(self, *, anonymous: bool, heavy: bool) -> None:
        """Take a slot for a request; ServiceUnavailable when its share is full."""
        if not self._room(anonymous=anonymous, heavy=heavy):
            raise ServiceUnavailable(
                "The service is busy; please retry in a moment.",
                headers={"Retry-After": str(SHED_RETRY_AFTER)},
            )
        self.total += 1
        self.anonymous += anonymous
        self.anonymous_heavy += anonymous and heavy

    def leave(self, *, anonymous: bool, heavy: bool) -> None:
        """Give back the slot `enter` took."""
        self.total -= 1
        self.anonymous -= anonymous
        self.anonymous_heavy -= anonymous and heavy

    @contextmanager
    def slot(self, *, anonymous: bool, heavy: bool) -> Iterator[None]:
        """Hold a slot while a block runs (`enter`, then `leave`)."""
        self.enter(anonymous=anonymous, heavy=heavy)
        try:
            yield
        finally:
            self.leave(anonymous=anonymous, heavy=heavy)


def in_flight_for(settings: Settings) -> InFlight:
    return InFlight(
        total=settings.admission_inflight,
        anonymous=settings.admission_anonymous_inflight,
        anonymous_heavy=settings.admission_anonymous_heavy_inflight,
    )


@web.middleware
async def admission_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Charge the request to its client's budget (429 when spent), then run it in one of
    this process's slots (503 when its share is full)."""
    settings = request.app[SETTINGS]
    charge = charge_for(request, settings) if settings.admission_enabled else None
    if charge is None:
        return await handler(request)
    client = client_of(request, settings)
    verdict = await request.app[BUDGETS].charge(client, charge.units)
    if verdict is not None and not verdict.allowed:
        raise TooManyRequests(
            f"This client's request budget is spent; try again in {verdict.reset} s.",
            headers=verdict.headers(),
        )
    slots, anonymous, heavy = request.app[ADMISSION], client.anonymous, charge.heavy
    slots.enter(anonymous=anonymous, heavy=heavy)  # the hot path: no context manager
    try:
        response = await handler(request)
    finally:
        slots.leave(anonymous=anonymous, heavy=heavy)
    if verdict is not None and not response.prepared:
        # What is left of the budget, on every charged answer.
        headers = response.headers
        headers["RateLimit-Limit"] = str(verdict.limit)
        headers["RateLimit-Remaining"] = str(verdict.remaining)
        headers["RateLimit-Reset"] = str(verdict.reset)
    return response
