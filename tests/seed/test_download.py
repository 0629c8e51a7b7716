"""Downloads against a loopback HTTP server serving a zip the test builds (no internet)."""

from __future__ import annotations

import asyncio
import hashlib
import sys

import pytest
from aiohttp import web

from core.imports.download import DownloadError, dataset_url, fetch
from tests.seed.releases import write_release, zip_release
from tests.services import settings_env


@pytest.fixture
async def grouplens(aiohttp_server, tmp_path):
    """Serves ml-latest-small.zip (+ .md5) like files.grouplens.org, with Range support."""
    archive = zip_release(write_release(tmp_path / "src"), tmp_path / "ml-latest-small.zip")
    state = {"md5": hashlib.md5(archive.read_bytes()).hexdigest(), "ranges": [], "gets": 0}

    async def zip_file(request):
        state["gets"] += 1
        state["ranges"].append(request.headers.get("Range"))
        return web.FileResponse(archive)

    async def md5(request):
        if state["md5"] is None:
            raise web.HTTPNotFound()
        return web.Response(text=f"{state['md5']}  ml-latest-small.zip\n")

    app = web.Application()
    app.router.add_get("/datasets/ml-latest-small.zip", zip_file)
    app.router.add_get("/datasets/ml-latest-small.zip.md5", md5)
    server = await aiohttp_server(app)
    state["base"] = str(server.make_url("/datasets"))
    state["archive"] = archive
    return state


def _fetch(state, cache, **kw):
    return fetch(
        dataset_url("ml-latest-small", state["base"]), cache_dir=cache, progress=False, **kw
    )


async def test_download_verifies_checksum_and_caches(grouplens, tmp_path):
    cache = tmp_path / "cache"
    path = await asyncio.to_thread(_fetch, grouplens, cache)
    assert path.read_bytes() == grouplens["archive"].read_bytes()
    await asyncio.to_thread(_fetch, grouplens, cache)
    assert grouplens["gets"] == 1  # the cached, verified file is reused


async def test_download_resumes_a_partial_file(grouplens, tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    data = grouplens["archive"].read_bytes()
    (cache / "ml-latest-small.zip.part").write_bytes(data[:100])
    path = await asyncio.to_thread(_fetch, grouplens, cache)
    assert grouplens["ranges"] == ["bytes=100-"]
    assert path.read_bytes() == data
    assert not (cache / "ml-latest-small.zip.part").exists()


async def test_checksum_mismatch_keeps_nothing(grouplens, tmp_path):
    grouplens["md5"] = "0" * 32
    with pytest.raises(DownloadError, match="checksum mismatch"):
        await asyncio.to_thread(_fetch, grouplens, tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


async def test_missing_checksum_is_refused_unless_optional(grouplens, tmp_path):
    grouplens["md5"] = None
    with pytest.raises(DownloadError, match="no checksum"):
        await asyncio.to_thread(_fetch, grouplens, tmp_path / "cache")
    path = await asyncio.to_thread(_fetch, grouplens, tmp_path / "cache", require_checksum=False)
    assert path.exists()


def test_bad_names_and_schemes(tmp_path):
    with pytest.raises(DownloadError, match="unknown dataset"):
        dataset_url("ml-1b", "http://x")
    with pytest.raises(DownloadError, match="http"):
        fetch("file:///etc/passwd", cache_dir=tmp_path)


async def test_unreachable_server_is_a_clear_error(tmp_path):
    from core.processes import free_port

    url = f"http://127.0.0.1:{free_port()}/ml-latest-small.zip"
    with pytest.raises(DownloadError, match="checksum request failed"):
        await asyncio.to_thread(fetch, url, cache_dir=tmp_path, progress=False)


async def test_cli_downloads_then_imports(grouplens, settings, odm, tmp_path):
    env = settings_env(settings)
    env.update(MOVIELENS_BASE_URL=grouplens["base"], DATA_DIR=str(tmp_path / "data"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "seed",
        "movielens",
        "--download",
        "ml-latest-small",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    text = out.decode()
    assert "import finished" in text and "6 inserted" in text
    assert (tmp_path / "data" / "cache" / "ml-latest-small.zip").exists()
    assert await odm.ratings.count_documents({}) == 6
