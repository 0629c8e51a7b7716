"""OpenAPI document, Swagger UI, and the health probes."""

from __future__ import annotations

import os
import socket

from openapi_spec_validator import validate
from pymongo.errors import OperationFailure

from api.appkeys import DISK, MONGO, SETTINGS
from tests.conftest import API


async def test_openapi_spec_is_valid_and_covers_every_route(client, db):
    resp = await client.get("/api/docs/openapi.json")
    assert resp.status == 200
    spec = await resp.json()
    validate(spec)
    assert spec["openapi"].startswith("3.")
    documented = {(path, method) for path, ops in spec["paths"].items() for method in ops}
    for route in client.app.router.routes():
        info = route.get_info()
        path = info.get("path") or info.get("formatter")
        if not path or not path.startswith(("/api/v1", "/health", "/ready")):
            continue
        if route.method == "HEAD":
            continue
        assert (path, route.method.lower()) in documented, (path, route.method)
    rate = spec["paths"][f"{API}/movies/{{movie_id}}/rating"]["put"]
    assert {"OAuth2": ["ratings:write"]} in rate["security"]
    assert "422" in rate["responses"] and "401" in rate["responses"]
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearerAuth"]["scheme"] == "bearer"
    assert schemes["OAuth2"]["flows"]["password"]["tokenUrl"] == f"{API}/auth/token"
    # Swagger offers a person only the scope every account holds, and pre-fills no made-up
    # id into "Try it out" (the first Execute would be a 404).
    assert list(schemes["OAuth2"]["flows"]["password"]["scopes"]) == ["ratings:write"]
    parameters = spec["paths"][f"{API}/movies/{{movie_id}}"]["get"]["parameters"]
    movie_id = next(p for p in parameters if p["name"] == "movie_id")
    assert "example" not in movie_id and "example" not in movie_id["schema"]
    assert "GET /api/v1/movies" in movie_id["description"]


async def test_swagger_ui_is_served(client, db):
    resp = await client.get("/api/docs")
    assert resp.status == 200
    assert "swagger" in (await resp.text()).lower()


async def test_health_and_ready(client, db):
    resp = await client.get("/health")
    body = await resp.json()
    assert body["status"] == "ok" and isinstance(body["pid"], int)
    resp = await client.get("/ready")
    assert resp.status == 200
    assert (await resp.json())["checks"] == {"mongodb": "ok", "redis": "ok"}


async def test_ready_reports_a_dead_dependency(client, db, monkeypatch):
    from api.appkeys import REDIS

    redis = client.app[REDIS]

    async def down():
        raise ConnectionError("gone")

    monkeypatch.setattr(redis, "ping", down)
    resp = await client.get("/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"]["redis"].startswith("unavailable")
    assert body["checks"]["mongodb"] == "ok"


async def test_ready_writes_and_reports_the_disk(client, db):
    resp = await client.get("/ready")
    assert resp.status == 200
    body = await resp.json()
    assert body["disk"]["writes"] == "accepted"
    assert body["disk"]["floor"] == client.app[SETTINGS].disk_free_floor
    proof = {"_id": f"{socket.gethostname()}:{os.getpid()}"}  # the write that proved it
    assert await db.heartbeats.count_documents(proof) == 1


async def test_ready_fails_when_the_database_takes_no_write(client, db, monkeypatch):
    import api.handlers.health as health

    async def refused(database, who=None):
        raise OperationFailure("internal server error", code=1)

    monkeypatch.setattr(health, "heartbeat_write", refused)
    resp = await client.get("/ready")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"]["mongodb"] == "unavailable: OperationFailure"


async def test_a_full_disk_refuses_writes_with_503_and_serves_reads(api, client, db, tmp_path):
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin)
    person = await api.user()
    watch = client.app[DISK]
    watch.fallback = tmp_path  # SecantusDB reports no disk: a folder on the same one does
    watch.floor = 1 << 62  # more than any disk has free: "under the floor"
    await watch.check(client.app[MONGO][client.app[SETTINGS].mongodb_db])
    before = await db.ratings.count_documents({})
    resp = await client.put(
        f"{API}/movies/{movie['id']}/rating", json={"score": 4.0}, headers=person["auth"]
    )
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["type"].endswith("storage-full")
    assert await db.ratings.count_documents({}) == before
    assert (await client.get(f"{API}/movies/{movie['id']}")).status == 200
    ready = await (await client.get("/ready")).json()
    assert ready["disk"]["writes"] == "refused"
    watch.floor = 0
    await watch.check(client.app[MONGO][client.app[SETTINGS].mongodb_db])
    resp = await client.put(
        f"{API}/movies/{movie['id']}/rating", json={"score": 4.0}, headers=person["auth"]
    )
    assert resp.status == 201


async def test_storage_errors_are_503_never_500(api, client, db, monkeypatch):
    from core.services import movies

    async def panicked(**kwargs):
        raise OperationFailure("internal server error", code=1)

    monkeypatch.setattr(movies, "movie_view", panicked)
    resp = await client.get(f"{API}/movies/{'0' * 24}")
    assert resp.status == 503
    assert resp.headers["Retry-After"].isdigit()
    assert (await resp.json())["type"].endswith("database-unavailable")
