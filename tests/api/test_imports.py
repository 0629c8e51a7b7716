"""Import jobs through the API, run by the real worker."""

from __future__ import annotations

import os
import signal

import pytest
from aiohttp import web

from seed.synth import generate
from tests.conftest import API, eventually
from tests.seed.releases import write_release, zip_release

URL = f"{API}/imports"


@pytest.fixture
async def admin(api):
    return await api.user("root", admin=True)


async def _job(client, admin, job_id):
    resp = await client.get(f"{URL}/{job_id}", headers=admin["auth"])
    assert resp.status == 200
    return await resp.json()


async def _job_soon(client, admin, job_id):
    """The job, or None when the API answers 503 with Retry-After: a busy machine running an
    import can take the database past a request's budget, and a client then asks again."""
    resp = await client.get(f"{URL}/{job_id}", headers=admin["auth"])
    if resp.status == 503:
        assert resp.headers["Retry-After"]
        return None
    assert resp.status == 200
    return await resp.json()


async def _until(client, admin, job_id, *statuses, timeout=120.0):
    async def check():
        job = await _job_soon(client, admin, job_id)
        return job if job is not None and job["status"] in statuses else None

    return await eventually(check, timeout=timeout, interval=0.2)


async def test_only_import_operators(api, client, settings):
    user = await api.user()
    body = {"source": "movielens", "path": "x"}
    assert (await client.post(URL, json=body)).status == 401
    assert (await client.post(URL, json=body, headers=user["auth"])).status == 403
    assert (await client.get(URL, headers=user["auth"])).status == 403


async def test_paths_are_confined_to_the_import_root(admin, client, settings, db):
    write_release(settings.imports_dir / "ok")
    for body in [
        {"source": "movielens", "path": "../../etc"},
        {"source": "movielens", "path": "/etc"},
        {"source": "movielens", "path": "missing"},
        {"source": "movielens", "path": "ok/../../x"},
        {"source": "movielens"},
        {"source": "movielens", "path": "ok", "url": "http://127.0.0.1/x.zip"},
        {"source": "netflix", "path": "ok"},
        {"source": "movielens", "url": "ftp://example.com/x.zip"},
    ]:
        resp = await client.post(URL, json=body, headers=admin["auth"])
        assert resp.status == 422, body
    # A link out of the root is refused too, and the answer says to copy the release in.
    outside = write_release(settings.data_dir / "elsewhere")
    (settings.imports_dir / "linked").symlink_to(outside, target_is_directory=True)
    body = {"source": "movielens", "path": "linked"}
    resp = await client.post(URL, json=body, headers=admin["auth"])
    assert resp.status == 422 and "copy the release into" in (await resp.json())["detail"]
    assert await db.import_jobs.count_documents({}) == 0


async def test_job_runs_reports_progress_and_is_idempotent(admin, client, settings, db):
    write_release(settings.imports_dir / "rel")
    headers = {**admin["auth"], "Idempotency-Key": "load-rel-1"}
    body = {"source": "movielens", "path": "rel"}
    resp = await client.post(URL, json=body, headers=headers)
    assert resp.status == 202
    created = await resp.json()
    assert resp.headers["Location"] == f"{URL}/{created['id']}"
    assert created["status"] in ("queued", "running", "succeeded")

    again = await client.post(URL, json=body, headers=headers)
    assert again.status == 202 and (await again.json())["id"] == created["id"]
    clash = await client.post(URL, json={**body, "dry_run": True}, headers=headers)
    assert clash.status == 409

    job = await _until(client, admin, created["id"], "succeeded", "failed")
    assert job["status"] == "succeeded", job
    assert job["counts"]["ratings"] == {"inserted": 6, "updated": 0, "unchanged": 0}
    assert job["counts"]["movies"]["inserted"] == 4 and job["counts"]["tags"] == 2
    assert job["progress"]["ratings.csv"] == {"done": 6, "total": 6}
    assert job["bad_rows"] == {"count": 0, "samples": []}
    assert {"movies.csv", "ratings.csv", "aggregation"} <= set(job["timings"])
    assert job["started_at"] and job["finished_at"]
    assert await db.ratings.count_documents({}) == 6
    listing = await (await client.get(URL, headers=admin["auth"])).json()
    assert [j["id"] for j in listing["items"]] == [created["id"]]
    resp = await client.delete(f"{URL}/{created['id']}", headers=admin["auth"])
    assert resp.status == 409  # finished jobs cannot be cancelled


async def test_unreadable_release_fails_with_a_reason(admin, client, settings):
    folder = write_release(settings.imports_dir / "broken")
    resp = await client.post(
        URL, json={"source": "movielens", "path": "broken"}, headers=admin["auth"]
    )
    (folder / "ratings.csv").unlink()  # gone before the worker gets to it
    job = await _until(client, admin, (await resp.json())["id"], "succeeded", "failed")
    assert job["status"] == "failed" and "ratings.csv" in job["error"]


async def test_bad_rows_are_reported_on_the_job(admin, client, settings):
    write_release(settings.imports_dir / "bad", extra_lines={"ratings.csv": ["1,1,9,1"]})
    resp = await client.post(
        URL, json={"source": "movielens", "path": "bad"}, headers=admin["auth"]
    )
    job = await _until(client, admin, (await resp.json())["id"], "succeeded", "failed")
    assert job["bad_rows"]["count"] == 1
    assert job["bad_rows"]["samples"][0]["file"] == "ratings.csv"
    assert job["bad_rows"]["samples"][0]["line"] == 8


async def test_import_from_a_url(admin, client, aiohttp_server, tmp_path, db):
    archive = zip_release(write_release(tmp_path / "src"), tmp_path / "rel.zip")

    async def serve(request):
        return web.FileResponse(archive)

    app = web.Application()
    app.router.add_get("/rel.zip", serve)
    server = await aiohttp_server(app)
    resp = await client.post(
        URL,
        json={"source": "movielens", "url": str(server.make_url("/rel.zip"))},
        headers=admin["auth"],
    )
    assert resp.status == 202
    job = await _until(client, admin, (await resp.json())["id"], "succeeded", "failed")
    assert job["status"] == "succeeded", job
    assert await db.ratings.count_documents({}) == 6


async def test_cancel_a_running_import(admin, client, settings, db):
    generate(settings.imports_dir / "big", ratings=40_000, users=300, movies=2_000)
    resp = await client.post(
        URL, json={"source": "movielens", "path": "big"}, headers=admin["auth"]
    )
    job_id = (await resp.json())["id"]

    async def importing_ratings():
        job = await _job(client, admin, job_id)
        return job["progress"].get("ratings.csv", {}).get("done", 0) > 0

    await eventually(importing_ratings, timeout=120)
    resp = await client.delete(f"{URL}/{job_id}", headers=admin["auth"])
    assert resp.status == 202 and (await resp.json())["cancel_requested"] is True
    job = await _until(client, admin, job_id, "cancelled", "succeeded", "failed")
    assert job["status"] == "cancelled"
    assert 0 < await db.ratings.count_documents({}) < 40_000


async def test_killed_worker_job_is_rerun_to_the_same_data(admin, client, settings, db):
    generate(settings.imports_dir / "kill", ratings=20_000, users=200, movies=1_000, seed=3)
    resp = await client.post(
        URL, json={"source": "movielens", "path": "kill"}, headers=admin["auth"]
    )
    job_id = (await resp.json())["id"]

    async def mid_ratings():
        job = await _job_soon(client, admin, job_id)
        if job is None:
            return None
        done = job["progress"].get("ratings.csv", {}).get("done", 0)
        return job if 0 < done < 15_000 else None

    await eventually(mid_ratings, timeout=120, interval=0.05)
    from bson import ObjectId

    stored = await db.import_jobs.find_one({"_id": ObjectId(job_id)})
    pid = int(stored["worker"].rsplit(":", 1)[1])
    assert pid != os.getpid()
    os.kill(pid, signal.SIGKILL)  # the worker child dies mid-import, without a goodbye

    job = await _until(client, admin, job_id, "succeeded", "failed", timeout=300)
    assert job["status"] == "succeeded", job
    assert job["attempts"] >= 2
    assert await db.ratings.count_documents({}) == 20_000
    count_all = [{"$group": {"_id": None, "n": {"$sum": "$rating.count"}}}]
    totals = await (await db.movies.aggregate(count_all)).to_list(1)
    assert totals[0]["n"] == 20_000


async def test_import_urls_off_the_allow_list_or_with_credentials_are_refused(admin, client, db):
    for url in (
        "http://169.254.169.254/latest/meta-data/x.zip",  # not on IMPORT_URL_HOSTS
        "http://2130706433/x.zip",  # loopback, written as one number
        "http://root:secret@127.0.0.1/x.zip",  # credentials are never stored or shown
    ):
        resp = await client.post(
            URL, json={"source": "movielens", "url": url}, headers=admin["auth"]
        )
        assert resp.status == 422, url
        assert resp.content_type == "application/problem+json"
        assert "secret" not in await resp.text()
    nul = await client.post(
        URL, json={"source": "movielens", "path": "ok\u0000/x"}, headers=admin["auth"]
    )
    assert nul.status == 422 and (await nul.json())["errors"][0]["field"] == "path"
    assert await db.import_jobs.count_documents({}) == 0


async def test_an_operator_client_starts_an_import(client, settings, db):
    from tests.api.test_token_hygiene import basic, create_client

    write_release(settings.imports_dir / "by-client")
    client_id, secret = create_client(settings, "imports:write")
    token = await client.post(
        f"{API}/auth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(client_id, secret),
    )
    auth = {"Authorization": f"Bearer {(await token.json())['access_token']}"}
    resp = await client.post(
        URL, json={"source": "movielens", "path": "by-client", "dry_run": True}, headers=auth
    )
    assert resp.status == 202, await resp.text()
    stored = await db.import_jobs.find_one({})
    assert stored["created_by_client"] == client_id and stored["created_by"] is None
    shown = await client.get(resp.headers["Location"], headers=auth)
    assert (await shown.json())["created_by_client"] == client_id
    listed = await client.get(URL, headers=auth)
    assert listed.status == 200
