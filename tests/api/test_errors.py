"""Every error is problem+json; request ids are accepted, generated and echoed."""

from __future__ import annotations

import logging

import orjson

from tests.conftest import API

PROBLEM_KEYS = {"type", "title", "status", "detail", "instance"}


async def _problem(resp, status):
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    body = await resp.json()
    assert PROBLEM_KEYS <= set(body) and body["status"] == status
    return body


async def test_unknown_route_and_wrong_method(client, db):
    await _problem(await client.get(f"{API}/nothing-here"), 404)
    resp = await client.delete(f"{API}/movies")
    await _problem(resp, 405)
    assert "GET" in resp.headers["Allow"]


async def test_body_errors_change_nothing(client, db):
    url = f"{API}/users"
    await _problem(await client.post(url, data="x", headers={"Content-Type": "text/plain"}), 415)
    await _problem(
        await client.post(url, data="{bad", headers={"Content-Type": "application/json"}), 400
    )
    await _problem(
        await client.post(url, data="[1]", headers={"Content-Type": "application/json"}), 422
    )
    await _problem(
        await client.post(url, data=b"\xff\xfe", headers={"Content-Type": "application/json"}), 400
    )
    big = b'{"username": "' + b"a" * (1024 * 1024 + 10) + b'"}'
    await _problem(
        await client.post(url, data=big, headers={"Content-Type": "application/json"}), 413
    )
    body = await _problem(await client.post(url, json={"username": 7, "nope": True}), 422)
    fields = {(e["location"], e["field"]) for e in body["errors"]}
    assert ("json", "username") in fields and ("json", "nope") in fields
    assert await db.users.count_documents({}) == 0


async def test_request_id_is_echoed_or_generated(client, db):
    resp = await client.get("/health", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get(f"{API}/nothing", headers={"X-Request-ID": "bad id\u00e9"})
    generated = resp.headers["X-Request-ID"]
    assert generated != "bad id" and len(generated) == 32
    assert (await resp.json())["request_id"] == generated


async def test_unexpected_error_is_logged_once_and_hidden(client, db, monkeypatch, caplog):
    from core.services import movies

    async def boom(**kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(movies, "list_movies", boom)
    resp = await client.get(f"{API}/movies", headers={"X-Request-ID": "req-500"})
    body = await _problem(resp, 500)
    assert "secret internals" not in body["detail"]
    records = [r for r in caplog.records if r.name == "api.requests"]
    assert len(records) == 1 and records[0].exc_info


async def test_a_stalled_database_is_a_503_with_retry_after(client, db, monkeypatch):
    """The mapping; tests/test_faults.py stalls a real server (SIGSTOP) under load."""
    from pymongo.errors import NetworkTimeout, OperationFailure

    from core.services import movies

    async def stalled(**kwargs):
        raise NetworkTimeout("timed out")

    monkeypatch.setattr(movies, "list_movies", stalled)
    resp = await client.get(f"{API}/movies")
    body = await _problem(resp, 503)
    assert resp.headers["Retry-After"] == "5" and body["type"].endswith("database-unavailable")

    async def refused(**kwargs):
        raise OperationFailure("bad query", code=2)

    monkeypatch.setattr(movies, "list_movies", refused)
    await _problem(await client.get(f"{API}/movies"), 500)  # our bug, not an outage


async def test_json_log_lines_carry_the_request_id():
    import json
    import logging

    from core.logs import JsonFormatter, request_id_var

    token = request_id_var.set("rid-1")
    try:
        record = logging.makeLogRecord(
            {"name": "x", "levelname": "INFO", "msg": "hi %s", "args": ("there",), "extra_field": 3}
        )
        line = json.loads(JsonFormatter().format(record))
    finally:
        request_id_var.reset(token)
    assert line["message"] == "hi there" and line["request_id"] == "rid-1"
    assert line["extra_field"] == 3


async def test_deeply_nested_json_is_refused_not_a_crash(api, client, db):
    user = await api.user("nester")
    deep = "[" * 1000 + "]" * 1000
    for method, url, body, auth in (
        ("post", f"{API}/users", '{"username": ' + deep + "}", {}),
        ("patch", f"{API}/users/me", '{"display_name": ' + deep + "}", user["auth"]),
        ("post", f"{API}/users", '{"a": ' + "{" * 5000 + "}" * 5000 + "}", {}),
    ):
        resp = await client.request(
            method, url, data=body, headers={"Content-Type": "application/json", **auth}
        )
        await _problem(resp, 400)
    assert await db.users.count_documents({}) == 1


async def test_a_missing_scope_names_it_in_the_challenge(api, client):
    user = await api.user("plain")
    resp = await client.post(
        f"{API}/movies", json={"title": "X", "year": 2000}, headers=user["auth"]
    )
    await _problem(resp, 403)
    assert resp.headers["WWW-Authenticate"] == (
        'Bearer error="insufficient_scope", scope="movies:write"'
    )


async def test_requests_aiohttp_cannot_parse_get_problem_json(settings, db, caplog):
    """The served runner (python -m api serve) answers its HTTP parser's errors too, with no
    version banner, and logs them without the offending text (it may carry a token)."""
    import asyncio

    from aiohttp import web

    from api.app import create_app
    from api.server import make_runner
    from core.processes import free_port

    caplog.set_level(logging.INFO, logger="api.server")
    runner = make_runner(create_app(settings), settings)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        for raw in (
            b"GET /health?" + b"q" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",  # URL too long
            b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 10_000 + b"\r\n\r\n",
            b"NOT A REQUEST LINE\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header\x00: y\r\n\r\n",
            b"GET /health HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cr3t-t0ken\x00\r\n\r\n",
        ):
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(raw)
            await writer.drain()
            answer = await asyncio.wait_for(reader.read(), timeout=10)
            writer.close()
            head, _, body = answer.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            assert 400 <= status < 500, head
            assert b"content-type: application/problem+json" in head.lower(), head
            assert b"server: movie-ratings" in head.lower(), head
            problem = orjson.loads(body)
            assert problem["status"] == status and problem["detail"]
        assert "unparsable request" in caplog.text and "s3cr3t" not in caplog.text
    finally:
        await runner.cleanup()
