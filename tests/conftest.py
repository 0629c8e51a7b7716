"""Session services, the app under test, per-test clean collections, and factories."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from api.app import create_app
from core import store
from core.cache import cache_for
from core.settings import Settings
from models import DOCUMENT_MODELS
from tests.services import TestServices, start_services, start_worker, stop_services

API = "/api/v1"
PASSWORD = "correct horse battery"


# ---- tiers --------------------------------------------------------------------------------
# fast: services and the store against the test database, no worker, no HTTP unless the rule
# is HTTP (make test-fast); system: the app over HTTP with a real Celery worker, or real
# processes; slow: the OpenAPI contract, fault injection, whole stacks, the OpenID provider
# and the ml-latest-small import. `make test` runs all three.
SLOW_MODULES = {
    "tests/api/test_contract.py",
    "tests/api/test_generated_client.py",
    "tests/api/test_oidc_login.py",
    "tests/api/test_oidc_userinfo.py",
    "tests/test_embedded.py",
    "tests/test_faults.py",
}
SLOW_TESTS = {
    "test_ml_latest_small_exact_counts_and_idempotent",
    "test_ml_latest_small_searches_find_the_film_in_the_top_3",
    "test_ml_latest_small_similar_lists_are_believable",
}
# Modules that start processes of their own (CLI commands, workers) without the fixture.
SYSTEM_MODULES = {"tests/test_cli.py", "tests/seed/test_download.py"}
ROOT = Path(__file__).resolve().parent.parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by these marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        module = item.path.relative_to(ROOT).as_posix()
        if module in SLOW_MODULES or item.name in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
        elif module in SYSTEM_MODULES or {"worker", "aiohttp_client"} & set(
            getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.system)
        else:
            item.add_marker(pytest.mark.fast)


@pytest.fixture(scope="session")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestServices]:
    started = start_services(tmp_path_factory.mktemp("services"))
    try:
        yield started
    finally:
        stop_services(started)


@pytest.fixture(scope="session")
def worker(services: TestServices, tmp_path_factory: pytest.TempPathFactory) -> TestServices:
    """A real `celery -A workers worker` on this session's queue, started for the first test
    that needs one (the fast tier never does); stopped with the services."""
    start_worker(services, tmp_path_factory.mktemp("worker"))
    return services


def _print_task_stacks() -> None:
    print("\n--- asyncio tasks still pending near the test's timeout", file=sys.stderr)
    for task in list(getattr(asyncio.tasks, "_all_tasks", ())):  # private: diagnostics only
        if not task.done():
            task.print_stack(file=sys.stderr)


@pytest.fixture(autouse=True)
def _task_stacks_on_hang(request: pytest.FixtureRequest) -> Iterator[None]:
    """Shortly before pytest-timeout fails a test, print every pending asyncio task's stack:
    its own dump shows threads, and a stuck `await` there is only the event loop's select."""
    limit = float(request.config.getini("timeout") or 0)
    if not limit:
        yield
        return
    timer = threading.Timer(max(limit - 10, limit / 2), _print_task_stacks)
    timer.daemon = True
    timer.start()
    yield
    timer.cancel()


@pytest.fixture
def settings(services: TestServices) -> Settings:
    return services.settings


@pytest.fixture
async def mongo(settings: Settings) -> AsyncIterator[AsyncMongoClient]:
    # Socket timeouts: a stalled server fails the test that met it instead of hanging the run.
    client: AsyncMongoClient = AsyncMongoClient(
        settings.mongodb_url, tz_aware=True, socketTimeoutMS=60_000
    )
    yield client
    await client.close()


@pytest.fixture
async def redis(settings: Settings) -> AsyncIterator[Redis]:
    async with Redis.from_url(settings.redis_url_required, socket_timeout=10) as client:
        yield client


@pytest.fixture
async def db(settings: Settings, mongo: AsyncMongoClient, redis: Redis) -> AsyncIterator[Any]:
    """The test database, emptied before each test (documents only: indexes stay), and the
    cache entries of the previous test."""
    database = mongo[settings.mongodb_db]
    for model in DOCUMENT_MODELS:
        await database[model.Settings.name].delete_many({})  # type: ignore[attr-defined]
    await cache_for(settings, redis).clear()
    yield database


@pytest.fixture
async def odm(settings: Settings, mongo: AsyncMongoClient, db: Any) -> Any:
    """Beanie initialised on the (clean) test database, for calling services directly."""
    await store.bind(db)
    return db


@pytest.fixture
async def client(
    aiohttp_client: Any, settings: Settings, db: Any, worker: TestServices
) -> TestClient:
    """The app over HTTP, with the worker its writes queue tasks for."""
    return await aiohttp_client(create_app(settings))


# ---- factories ----------------------------------------------------------------------------

_counter = iter(range(1_000_000))


class Api:
    """Small helpers that go through the real routes, as a client would."""

    def __init__(self, client: TestClient, db: Any) -> None:
        self.client = client
        self.db = db

    async def user(self, name: str | None = None, *, admin: bool = False) -> dict[str, Any]:
        """Register a user through the API and log in; returns its body plus `auth` headers."""
        name = name or f"user{next(_counter)}"
        resp = await self.client.post(
            f"{API}/users",
            json={
                "username": name,
                "email": f"{name}@example.com",
                "display_name": name.title(),
                "password": PASSWORD,
            },
        )
        assert resp.status == 201, await resp.text()
        body = await resp.json()
        if admin:
            await self.db.users.update_one({"username": name}, {"$set": {"role": "admin"}})
        tokens = await self.login(name)
        return {
            **body,
            "tokens": tokens,
            "auth": {"Authorization": f"Bearer {tokens['access_token']}"},
        }

    async def login(self, username: str, password: str = PASSWORD) -> dict[str, Any]:
        resp = await self.client.post(
            f"{API}/auth/token",
            data={"grant_type": "password", "username": username, "password": password},
        )
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def movie(self, admin: dict[str, Any], **fields: Any) -> dict[str, Any]:
        body = {"title": f"Movie {next(_counter)}", "year": 2000, "genres": ["Drama"], **fields}
        resp = await self.client.post(f"{API}/movies", json=body, headers=admin["auth"])
        assert resp.status == 201, await resp.text()
        return await resp.json()

    async def rate(self, user: dict[str, Any], movie_id: str, score: float) -> int:
        resp = await self.client.put(
            f"{API}/movies/{movie_id}/rating", json={"score": score}, headers=user["auth"]
        )
        assert resp.status in (200, 201), await resp.text()
        return resp.status


@pytest.fixture
def api(client: TestClient, db: Any) -> Api:
    return Api(client, db)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Poll `check` until it returns a truthy value (the worker runs asynchronously)."""
    deadline = asyncio.get_running_loop().time() + timeout
    last: Any = None
    while asyncio.get_running_loop().time() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s; last value {last!r}")


def worker_log(services: TestServices) -> str:
    return Path(services.worker_log).read_text() if services.worker_log else ""
