"""The request parser: path ids read field by field answer what webargs' whole load does."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from marshmallow import Schema, fields, post_load
from webargs.aiohttpparser import AIOHTTPParser

from api.middlewares import DecodedBodyParser, RequestValidationError, _id_fields
from api.schemas import ImportIdPath, MovieIdPath, ObjectIdField, UserIdPath
from tests.conftest import API


async def _parse(*, on: AIOHTTPParser, schema: Schema, match_info: dict[str, str]) -> Any:
    """What a parser makes of a path: the parsed ids, or the messages it refused them with."""
    request = make_mocked_request("GET", "/", match_info=match_info)
    try:
        return await on.parse(schema, request, location="match_info")
    except RequestValidationError as exc:
        return exc.messages


def _callback(error: Any, *args: Any, **kwargs: Any) -> Any:
    raise RequestValidationError(error.normalized_messages())


@pytest.mark.parametrize("schema", [MovieIdPath(), UserIdPath(), ImportIdPath()])
@pytest.mark.parametrize(
    "value",
    ["65f1c0ffee0123456789abcd", "65F1C0FFEE0123456789ABCD", "not-an-id", "", "6" * 25, "é" * 24],
)
async def test_path_ids_parse_as_the_whole_schema_load_would(schema: Schema, value: str) -> None:
    (name,) = schema.fields
    assert _id_fields(schema) is not None  # every path schema takes the short way
    fast = DecodedBodyParser(error_handler=_callback)
    whole = AIOHTTPParser(error_handler=_callback)
    seen = await _parse(on=fast, schema=schema, match_info={name: value})
    assert seen == await _parse(on=whole, schema=schema, match_info={name: value})


class WithHook(Schema):
    movie_id = ObjectIdField(required=True)

    @post_load
    def mark(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return {**data, "hooked": True}


class Mixed(Schema):
    movie_id = ObjectIdField(required=True)
    slug = fields.String(required=True)


async def test_schemas_beyond_plain_ids_get_the_whole_load() -> None:
    assert _id_fields(WithHook()) is None and _id_fields(Mixed()) is None
    parser = DecodedBodyParser(error_handler=_callback)
    parsed = await _parse(
        on=parser, schema=WithHook(), match_info={"movie_id": "65f1c0ffee0123456789abcd"}
    )
    assert parsed["hooked"] is True
    # A route with more path parts than the schema names is webargs' to refuse.
    refused = await _parse(
        on=parser,
        schema=MovieIdPath(),
        match_info={"movie_id": "65f1c0ffee0123456789abcd", "other": "x"},
    )
    assert refused == {"match_info": {"other": ["Unknown field."]}}


async def test_every_response_hides_the_server_version_and_html_forbids_framing(api, client):
    docs = await client.get("/api/docs")
    assert docs.status == 200 and docs.content_type == "text/html"
    policy = docs.headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in policy and "'sha256-" in policy
    assert "unsafe-inline" not in policy.split("script-src")[1].split(";")[0]
    for resp in (docs, await client.get(f"{API}/movies"), await client.get("/nowhere")):
        assert resp.headers["Server"] == "movie-ratings"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
