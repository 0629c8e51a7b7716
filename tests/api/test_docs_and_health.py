"""OpenAPI document, Swagger UI, and the health probes."""

from __future__ import annotations

from openapi_spec_validator import validate

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
