"""Response helpers, problem+json rendering, and the handler annotations for auth."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
from aiohttp import web
from aiohttp_apigami import docs as apigami_docs
from aiohttp_apigami.constants import API_SPEC_ATTR, SCHEMAS_ATTR
from marshmallow import Schema

from api.appkeys import CACHE, CURSORS, NEAR, SETTINGS
from api.schemas import ProblemSchema
from core.cache import Cache, CacheKey
from core.errors import BadCursor
from core.logs import request_id_var
from core.store import Position

PROBLEM_JSON = "application/problem+json"
AUTH_ATTR = "__auth__"

F = TypeVar("F", bound=Callable[..., Any])


def json_response(
    data: Any, *, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        body=orjson.dumps(data), status=status, content_type="application/json", headers=headers
    )


PUBLIC = "public, max-age=5"  # catalogue reads: shared caches may keep them briefly
PRIVATE = "private, no-store"  # a caller's own data


def etag_matches(header: str | None, etag: str) -> bool:
    if not header:
        return False
    if header.strip() == "*":
        return True
    # Weak comparison (RFC 9110 §13.1.2): W/"x" matches "x".
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def cached_json(
    request: web.Request, data: Any, *, cache_control: str, headers: dict[str, str] | None = None
) -> web.Response:
    """A JSON 200 with a strong ETag of its body, or 304 with no body when If-None-Match hits."""
    return cached_body(request, orjson.dumps(data), cache_control=cache_control, headers=headers)


def cached_body(
    request: web.Request,
    body: bytes,
    *,
    cache_control: str,
    headers: dict[str, str] | None = None,
    etag: str | None = None,
) -> web.Response:
    """`cached_json` for a body already serialized (the Redis cache holds bodies)."""
    etag = etag or f'"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'
    all_headers = {"ETag": etag, "Cache-Control": cache_control, **(headers or {})}
    if etag_matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=all_headers)
    return web.Response(body=body, content_type="application/json", headers=all_headers)


NEAR_CANDIDATE = "near_candidate"


@dataclass(frozen=True, slots=True)
class NearCandidate:
    """A public response `cached_read` produced, for the near-cache middleware to keep."""

    url: str  # the canonical spelling of the request: the only one the near cache keeps
    version: str  # the cache version key whose bump invalidates it
    stamp: tuple[int, int]  # the near cache's stamp of that key before the value was read
    body: bytes
    etag: str


async def cached_read(
    request: web.Request,
    key: CacheKey,
    load: Callable[[], Awaitable[Any]],
    *,
    cache_control: str,
    near: bool = True,
) -> web.Response:
    """A cached JSON read: Redis (cache-aside), and for public reads this process's copy.

    `near=False` for a caller's own data, which must show their write at once whichever
    process serves it.
    """
    cache: Cache = request.app[CACHE]
    local = request.app[NEAR] if near and cache.health.available else None
    stamp = local.stamp(key.version) if local is not None else None
    body = await cache.fetch(key, load)
    response = cached_body(request, body, cache_control=cache_control)
    if stamp is not None:
        # The near-cache middleware keeps it once the response is final.
        request[NEAR_CANDIDATE] = NearCandidate(
            canonical_url(request), key.version, stamp, body, response.headers["ETag"]
        )
    return response


def client_address(request: web.Request) -> str:
    """The client's address: the peer's, or behind a trusted proxy the rightmost
    X-Forwarded-For hop that is not a trusted proxy (the ones left of it are the client's
    own claims)."""
    peer = request.remote or "unknown"
    trusted = request.app[SETTINGS].trusted_proxies
    if peer not in trusted:
        return peer
    hops = ",".join(request.headers.getall("X-Forwarded-For", [])).split(",")
    for hop in reversed([h.strip() for h in hops if h.strip()]):
        if hop not in trusted:
            return hop
    return peer


def problem_type(request: web.Request, slug: str) -> str:
    """The URI of the page this API serves about a problem type (`/problems/{slug}`)."""
    base = request.app[SETTINGS].public_url or f"{request.scheme}://{request.host}"
    return f"{base.rstrip('/')}/problems/{slug}"


def problem(
    request: web.Request,
    *,
    status: int,
    title: str,
    detail: str,
    slug: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> web.Response:
    """An RFC 9457 problem+json response."""
    body: dict[str, Any] = {
        "type": problem_type(request, slug) if slug else "about:blank",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.path,
    }
    request_id = request_id_var.get()
    if request_id:
        body["request_id"] = request_id
    body.update(extra)
    return web.Response(
        body=orjson.dumps(body), status=status, content_type=PROBLEM_JSON, headers=headers
    )


_NOT_SCOPE = {"cursor", "offset", "limit"}


def _list_scope(request: web.Request) -> str:
    """What names a list for its cursors: the path and every parsed parameter that chooses
    or orders rows (defaults included, so `?sort=title` and no sort are one list)."""
    chosen = {k: v for k, v in request["querystring"].items() if k not in _NOT_SCOPE}
    return request.path + orjson.dumps(chosen, option=orjson.OPT_SORT_KEYS, default=str).decode()


def page_after(request: web.Request) -> Position | None:
    """The position the `cursor` parameter names, or None for a first page; BadCursor
    (400) for a cursor not issued for this list."""
    cursor = request["querystring"].get("cursor")
    if cursor is None:
        return None
    position = request.app[CURSORS].decode(cursor, scope=_list_scope(request))
    if not isinstance(position, list) or len(position) != 2:  # issued by another version
        raise BadCursor("This cursor is from an earlier version of this list; start again.")
    return position[0], position[1]


def next_url(request: web.Request, after: Position | None) -> str | None:
    """Root-relative URL of the next page: the parsed query, a cursor in place of any offset
    (never the raw query: the body is cached under the parsed one)."""
    if after is None:
        return None
    query = canonical_query(request, leave_out={"offset", "cursor"})
    query["cursor"] = request.app[CURSORS].encode(list(after), scope=_list_scope(request))
    return str(request.rel_url.with_query(query))


def _query_schema(request: web.Request) -> Schema | None:
    for validation in getattr(request.match_info.handler, SCHEMAS_ATTR, None) or []:
        if validation.location == "querystring":
            schema = validation.schema
            return schema() if isinstance(schema, type) else schema
    return None


def canonical_query(request: web.Request, *, leave_out: set[str] | None = None) -> dict[str, str]:
    """The query as parsed, in one spelling: known parameters only, in name order, each
    once, as the schema writes it, defaults left out."""
    schema = _query_schema(request)
    parsed = request.get("querystring") or {}
    query: dict[str, str] = {}
    if schema is None:
        return query
    for name in sorted(parsed):
        field, value = schema.fields.get(name), parsed[name]
        if field is None or value is None or value == field.load_default:
            continue
        if leave_out and name in leave_out:
            continue
        text = field.serialize(name, parsed)
        query[field.data_key or name] = str(text).lower() if isinstance(text, bool) else str(text)
    return query


def canonical_url(request: web.Request) -> str:
    """The request's path with its canonical query (`canonical_query`)."""
    return str(request.rel_url.with_query(canonical_query(request)))


_PROBLEM = {"content": {PROBLEM_JSON: {"schema": ProblemSchema}}}


def errors(*statuses: int) -> dict[int, dict[str, Any]]:
    """OpenAPI response entries for the problem answers a route may give."""
    descriptions = {
        400: "Malformed request",
        401: "Missing or invalid bearer token",
        403: "Not allowed",
        404: "Not found",
        408: "The body did not arrive in time",
        409: "Conflict",
        413: "Body over 1 MiB",
        415: "Body is not JSON",
        422: "Validation failed",
        429: "Too many requests or attempts: see Retry-After and the RateLimit fields",
        503: "A dependency is unavailable",
    }
    return {s: {"description": descriptions[s], **_PROBLEM} for s in statuses}


def docs(**kwargs: Any) -> Callable[[F], F]:
    """aiohttp-apigami's @docs without its Swagger 2 `produces` key, invalid in OpenAPI 3."""

    def decorate(handler: F) -> F:
        handler = apigami_docs(**kwargs)(handler)
        getattr(handler, API_SPEC_ATTR).pop("produces", None)
        return handler

    return decorate


def authenticated(scope: str | None = None, *, person: bool = False) -> Callable[[F], F]:
    """Mark a handler as needing a bearer token (with `scope`; for `person` routes, a
    person's token, never a client's); the auth middleware enforces both."""

    def decorate(handler: F) -> F:
        setattr(handler, AUTH_ATTR, {"scope": scope, "person": person})
        responses = errors(401, 403) if scope or person else errors(401)
        security = [{"OAuth2": [scope] if scope else []}, {"bearerAuth": []}]
        return docs(security=security, responses=responses)(handler)

    return decorate
