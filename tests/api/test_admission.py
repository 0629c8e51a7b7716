"""Admission control: budgets per client charged by the request's shape before any database
work (429 with RateLimit fields), and in-flight shares per process (503 at once)."""

from __future__ import annotations

from typing import Any

import pytest
from bson import ObjectId

from api.admission import Budgets, Client, InFlight
from api.app import create_app
from api.appkeys import ADMISSION, TOKENS
from api.ratelimit import Verdict
from core.errors import ServiceUnavailable
from tests.conftest import API


@pytest.fixture
async def budgeted(aiohttp_client, settings, db, redis):
    """A client of an app with small budgets, its buckets emptied of earlier tests' takes
    (and no near cache: its hits are served before admission, for free)."""

    async def make(**limits: Any) -> Any:
        async for key in redis.scan_iter(match=f"{settings.mongodb_db}:rl:budget:*"):
            await redis.delete(key)
        tuned = settings.model_copy(update={"expose_db_calls": True, "cache_near_ttl": 0, **limits})
        return await aiohttp_client(create_app(tuned))

    return make


def _bearer(client: Any, scopes: list[str] | None = None) -> dict[str, str]:
    token = client.app[TOKENS].issue(subject=str(ObjectId()), scopes=scopes or [])
    return {"Authorization": f"Bearer {token}"}


async def test_an_address_past_its_budget_gets_429_before_any_database_work(budgeted):
    client = await budgeted(admission_budget_address=3, admission_window=60)
    statuses = []
    for _ in range(4):
        resp = await client.get(f"{API}/genres")
        statuses.append(resp.status)
    assert statuses == [200, 200, 200, 429]
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"].endswith("/problems/rate-limited")
    assert int(resp.headers["Retry-After"]) >= 1
    assert resp.headers["RateLimit-Limit"] == "3"
    assert resp.headers["RateLimit-Remaining"] == "0"
    assert resp.headers["X-DB-Calls"] == "0"


async def test_answers_carry_what_is_left_of_the_budget(budgeted):
    client = await budgeted(admission_budget_address=50)
    resp = await client.get(f"{API}/genres")
    assert resp.status == 200
    assert resp.headers["RateLimit-Limit"] == "50"
    assert resp.headers["RateLimit-Remaining"] == "49"


@pytest.mark.parametrize("heavy", ["q=matrix", "genre=Drama", "offset=5", "year_min=1990"])
async def test_searches_filters_and_offsets_cost_the_heavy_price(budgeted, heavy):
    client = await budgeted(admission_budget_address=25, admission_cost_heavy=10)
    resp = await client.get(f"{API}/movies?{heavy}")
    assert resp.status == 200
    assert resp.headers["RateLimit-Remaining"] == "15"
    assert (await client.get(f"{API}/movies?{heavy}")).status == 200
    resp = await client.get(f"{API}/movies?{heavy}")
    assert resp.status == 429  # 5 left, 10 asked: refused, nothing taken
    assert resp.headers["RateLimit-Remaining"] == "5"
    assert resp.headers["X-DB-Calls"] == "0"
    plain = await client.get(f"{API}/movies?offset=00")  # a zero offset is a first page
    assert plain.status == 200
    assert plain.headers["RateLimit-Remaining"] == "4"


async def test_a_valid_token_draws_on_its_account_not_the_address(budgeted):
    client = await budgeted(admission_budget_address=2, admission_budget_account=100)
    for _ in range(2):
        assert (await client.get(f"{API}/genres")).status == 200
    assert (await client.get(f"{API}/genres")).status == 429
    resp = await client.get(f"{API}/genres", headers=_bearer(client))
    assert resp.status == 200
    assert resp.headers["RateLimit-Limit"] == "100"
    # A forged token is anonymous here: it draws on the (spent) address.
    forged = {"Authorization": "Bearer not.a.token"}
    assert (await client.get(f"{API}/genres", headers=forged)).status == 429


async def test_health_docs_and_problem_pages_are_free(budgeted):
    client = await budgeted(admission_budget_address=1)
    for path in ("/health", "/api/docs/openapi.json", "/problems/rate-limited"):
        for _ in range(3):
            resp = await client.get(path)
            assert resp.status == 200, path
            assert "RateLimit-Limit" not in resp.headers


async def test_a_full_anonymous_share_sheds_anonymous_requests_but_not_people(budgeted):
    client = await budgeted(admission_inflight=4, admission_anonymous_inflight=2)
    slots = client.app[ADMISSION]
    slots.anonymous = slots.total = 2  # two anonymous requests are running
    resp = await client.get(f"{API}/genres")
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "1"
    assert resp.headers["X-DB-Calls"] == "0"
    assert (await client.get(f"{API}/genres", headers=_bearer(client))).status == 200
    # Logins are anonymous: guesses cannot take the slots of people already logged in.
    form = {"grant_type": "password", "username": "nobody", "password": "wrong password"}
    assert (await client.post(f"{API}/auth/token", data=form)).status == 503
    assert slots.total == 2


def test_in_flight_shares():
    slots = InFlight(total=3, anonymous=2, anonymous_heavy=1)
    with slots.slot(anonymous=True, heavy=True):
        with pytest.raises(ServiceUnavailable):
            with slots.slot(anonymous=True, heavy=True):
                pass
        with slots.slot(anonymous=True, heavy=False):
            with pytest.raises(ServiceUnavailable):
                with slots.slot(anonymous=True, heavy=False):
                    pass
            with slots.slot(anonymous=False, heavy=True):
                with pytest.raises(ServiceUnavailable):
                    with slots.slot(anonymous=False, heavy=False):
                        pass
    assert (slots.total, slots.anonymous, slots.anonymous_heavy) == (0, 0, 0)


async def test_every_api_operation_documents_429_and_503(client):
    spec = await (await client.get("/api/docs/openapi.json")).json()
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            codes = set(operation["responses"])
            assert "503" in codes, (method, path)
            assert ("429" in codes) == path.startswith("/api/v1/"), (method, path)


async def test_behind_a_trusted_proxy_the_forwarded_client_is_charged(budgeted):
    client = await budgeted(admission_budget_address=1, trusted_proxies=["127.0.0.1"])
    first = {"X-Forwarded-For": "203.0.113.7"}
    assert (await client.get(f"{API}/genres", headers=first)).status == 200
    assert (await client.get(f"{API}/genres", headers=first)).status == 429
    # Another client behind the same proxy has its own budget; hops left of the last
    # untrusted one are the client's own claims and change nothing.
    other = {"X-Forwarded-For": "203.0.113.7, 198.51.100.9"}
    assert (await client.get(f"{API}/genres", headers=other)).status == 200
    spoofed = {"X-Forwarded-For": "192.0.2.1, 203.0.113.7"}
    assert (await client.get(f"{API}/genres", headers=spoofed)).status == 429


async def test_from_an_untrusted_peer_forwarded_addresses_are_ignored(budgeted):
    client = await budgeted(admission_budget_address=1)
    assert (
        await client.get(f"{API}/genres", headers={"X-Forwarded-For": "192.0.2.1"})
    ).status == 200
    assert (
        await client.get(f"{API}/genres", headers={"X-Forwarded-For": "192.0.2.2"})
    ).status == 429


class CountingLimiter:
    """A bucket of `tokens` that records each take's cost."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.calls: list[int] = []

    async def take(self, scope: str, subject: str, *, burst: int, window: int, cost: int = 1):
        self.calls.append(cost)
        if cost > self.tokens:
            return Verdict(False, burst, self.tokens, 5)
        self.tokens -= cost
        return Verdict(True, burst, self.tokens, 1)


async def test_a_process_takes_a_clients_units_a_lease_at_a_time():
    limiter = CountingLimiter(600)
    budgets = Budgets(limiter, window=60)  # type: ignore[arg-type]
    client = Client("address", "192.0.2.1", 600)
    verdicts = [await budgets.charge(client, 1) for _ in range(21)]
    assert limiter.calls == [21]  # the request and two seconds of refill (600 / 60 a second)
    assert [v.remaining for v in verdicts] == list(range(599, 578, -1))
    assert all(v.allowed for v in verdicts)
    await budgets.charge(client, 10)
    assert limiter.calls == [21, 30]
    other = Client("account", "someone", 600)
    await budgets.charge(other, 1)
    assert limiter.calls == [21, 30, 21]  # each client its own lease


async def test_near_empty_the_request_alone_is_taken_and_an_empty_bucket_refuses_here():
    limiter = CountingLimiter(5)
    budgets = Budgets(limiter, window=60)  # type: ignore[arg-type]
    client = Client("address", "192.0.2.1", 600)
    assert (await budgets.charge(client, 1)).allowed
    assert limiter.calls == [21, 1]
    limiter.tokens = 0
    refused = await budgets.charge(client, 1)
    assert not refused.allowed and refused.reset == 5
    assert limiter.calls == [21, 1, 21]  # nothing left: no second try
    assert not (await budgets.charge(client, 1)).allowed
    assert limiter.calls == [21, 1, 21]  # refused by this process, no round trip
