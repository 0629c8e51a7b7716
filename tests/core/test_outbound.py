"""Import URLs cannot be turned against the server's own network (SSRF). Every server here
listens on loopback; nothing is sent anywhere else."""

from __future__ import annotations

import asyncio
import socket

import pytest
from aiohttp import web

from core.imports.download import DownloadError, fetch
from core.outbound import OutboundRefused, UrlPolicy, check_url

ZIP = b"PK" + b"x" * 4000


@pytest.fixture
async def servers(aiohttp_server):
    """Two loopback servers: `inside` stands for an internal service; `public` serves a
    file and redirects to `inside`."""
    hits = {"inside": 0}

    async def secret(request):
        hits["inside"] += 1
        return web.Response(text="internal admin page")

    inside_app = web.Application()
    inside_app.router.add_get("/admin", secret)
    inside = await aiohttp_server(inside_app)

    async def release(request):
        return web.Response(body=ZIP)

    async def to_inside(request):
        raise web.HTTPFound(str(inside.make_url("/admin")))

    async def to_localhost(request):
        raise web.HTTPFound(f"http://localhost:{inside.port}/admin")

    public_app = web.Application()
    public_app.router.add_get("/rel.zip", release)
    public_app.router.add_get("/redirect.zip", to_inside)
    public_app.router.add_get("/elsewhere.zip", to_localhost)
    public = await aiohttp_server(public_app)
    return {"public": public, "inside": inside, "hits": hits}


def _fetch(url, tmp_path, policy):
    return fetch(url, cache_dir=tmp_path, require_checksum=False, progress=False, policy=policy)


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",  # not on the allow-list
        "http://2130706433/x.zip",  # 127.0.0.1 written as one number
        "http://0x7f000001/x.zip",
        "http://user:secret@files.grouplens.org/x.zip",  # credentials
        "http://files.grouplens.org@127.0.0.1/x.zip",
        "file:///etc/passwd",
        "gopher://files.grouplens.org/",
        "http:///x.zip",
    ],
)
def test_urls_refused_by_their_text(url):
    with pytest.raises(OutboundRefused):
        check_url(url, UrlPolicy.allowing(["files.grouplens.org"]))


async def test_allowed_name_that_resolves_to_loopback_is_refused(servers, tmp_path):
    url = str(servers["public"].make_url("/rel.zip"))
    with pytest.raises(DownloadError, match="public address"):
        await asyncio.to_thread(_fetch, url, tmp_path, UrlPolicy.allowing(["127.0.0.1"]))


async def test_every_redirect_is_checked_again(servers, tmp_path):
    # Even where loopback is allowed (as in these tests), a hop to a host off the list is not.
    policy = UrlPolicy.allowing(["127.0.0.1"], allow_private=True)
    url = str(servers["public"].make_url("/elsewhere.zip"))
    with pytest.raises(DownloadError, match="not allowed"):
        await asyncio.to_thread(_fetch, url, tmp_path, policy)
    # And in production (no private addresses), the redirect to an internal address is
    # refused before anything connects to it.
    strict = UrlPolicy.allowing(["127.0.0.1"], allow_private=False)
    with pytest.raises(DownloadError):
        await asyncio.to_thread(
            _fetch, str(servers["public"].make_url("/redirect.zip")), tmp_path, strict
        )
    assert servers["hits"]["inside"] == 0


async def test_downloads_are_capped(servers, tmp_path):
    small = UrlPolicy.allowing(["127.0.0.1"], allow_private=True, max_bytes=1000)
    with pytest.raises(DownloadError, match="limit"):
        await asyncio.to_thread(
            _fetch, str(servers["public"].make_url("/rel.zip")), tmp_path, small
        )
    assert not list(tmp_path.glob("*.part"))
    enough = UrlPolicy.allowing(["127.0.0.1"], allow_private=True, max_bytes=10_000)
    path = await asyncio.to_thread(
        _fetch, str(servers["public"].make_url("/rel.zip")), tmp_path, enough
    )
    assert path.read_bytes() == ZIP


async def test_errors_do_not_tell_refused_from_reset(tmp_path):
    """A port scanner learns nothing: closed port and reset connection read the same."""
    policy = UrlPolicy.allowing(["127.0.0.1"], allow_private=True)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    closed_port = closed.getsockname()[1]
    closed.close()

    async def reset(reader, writer):
        await reader.read(100)
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        writer.transport.abort()

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    reset_port = server.sockets[0].getsockname()[1]
    messages = []
    for port in (closed_port, reset_port):
        with pytest.raises(DownloadError) as caught:
            await asyncio.to_thread(_fetch, f"http://127.0.0.1:{port}/x.zip", tmp_path, policy)
        messages.append(str(caught.value))
    server.close()
    assert messages[0] == messages[1]
    assert "refused" not in messages[0].lower() and "reset" not in messages[0].lower()
