"""A client generated from the served document (openapi-python-client) runs the core flow
with typed responses and typed errors: register, get a token, search, rate, see the
profile, remove the rating, and a 409 that keeps its `field`."""

from __future__ import annotations

import asyncio
import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from api.app import create_app
from tests.conftest import PASSWORD

GENERATOR = Path(sys.executable).with_name("openapi-python-client")


async def _generate(spec_url: str, out: Path) -> Any:
    config = out.parent / "client.yaml"
    config.write_text(
        "package_name_override: mrclient\nproject_name_override: mrclient\npost_hooks: []\n"
    )
    proc = await asyncio.create_subprocess_exec(
        str(GENERATOR), "generate", "--url", spec_url, "--meta", "none",
        "--output-path", str(out), "--config", str(config), "--overwrite",
        "--fail-on-warning",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    text, _ = await proc.communicate()
    assert proc.returncode == 0, text.decode(errors="replace")
    sys.path.insert(0, str(out.parent))
    importlib.invalidate_caches()
    return importlib.import_module("mrclient")


@pytest.mark.timeout(300)
async def test_a_generated_client_runs_the_core_flow(aiohttp_server, settings, db, api, tmp_path):
    server = await aiohttp_server(create_app(settings))
    base = str(server.make_url("")).rstrip("/")
    admin = await api.user("root", admin=True)
    movie = await api.movie(admin, title="Arrival", year=2016)
    try:
        client_pkg = await _generate(f"{base}/api/docs/openapi.json", tmp_path / "mrclient")
        await _flow(client_pkg, base, movie["id"])
    finally:
        sys.path[:] = [p for p in sys.path if p != str(tmp_path)]
        for name in [m for m in sys.modules if m == "mrclient" or m.startswith("mrclient.")]:
            del sys.modules[name]


async def _flow(mrclient: Any, base: str, movie_id: str) -> None:
    from importlib import import_module

    models = import_module("mrclient.models")
    register = import_module("mrclient.api.users.register")
    token = import_module("mrclient.api.auth.token")
    list_movies = import_module("mrclient.api.movies.list_movies")
    put_rating = import_module("mrclient.api.ratings.put_rating")
    my_ratings = import_module("mrclient.api.ratings.my_ratings")
    delete_rating = import_module("mrclient.api.ratings.delete_rating")

    anonymous = mrclient.Client(base_url=base)
    body = models.UserCreate(
        username="typed", email="typed@example.com", display_name="Typed", password=PASSWORD
    )
    created = await register.asyncio_detailed(client=anonymous, body=body)
    assert created.status_code == 201 and isinstance(created.parsed, models.UserPrivate)
    body.email = "other@example.com"  # the same username again, with its own email
    again = await register.asyncio_detailed(client=anonymous, body=body)
    assert again.status_code == 409
    assert isinstance(again.parsed, models.Problem) and again.parsed.field == "username"

    answer = await token.asyncio_detailed(
        client=anonymous,
        body=models.TokenBody(
            grant_type=models.TokenBodyGrantType.PASSWORD, username="typed", password=PASSWORD
        ),
    )
    assert answer.status_code == 200, answer.content
    access = answer.parsed.access_token
    me = mrclient.AuthenticatedClient(base_url=base, token=access)

    page = await list_movies.asyncio_detailed(client=anonymous, q="arrival")
    assert page.status_code == 200
    assert [m.id for m in page.parsed.items] == [movie_id]

    rated = await put_rating.asyncio_detailed(movie_id, client=me, body=models.RatingPut(score=4.5))
    assert rated.status_code == 201 and rated.parsed.score == 4.5
    changed = await put_rating.asyncio_detailed(
        movie_id, client=me, body=models.RatingPut(score=3.5)
    )
    assert changed.status_code == 200 and isinstance(changed.parsed, models.RatingPublic)
    assert changed.parsed.score == 3.5

    profile = await my_ratings.asyncio_detailed(client=me)
    assert [(i.movie_id, i.score) for i in profile.parsed.items] == [(movie_id, 3.5)]

    removed = await delete_rating.asyncio_detailed(movie_id, client=me)
    assert removed.status_code == 204
    missing = await delete_rating.asyncio_detailed(movie_id, client=me)
    assert missing.status_code == 404 and isinstance(missing.parsed, models.Problem)
