"""The pages problem `type` URIs point to: what each problem means and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from aiohttp import web

from api.http import docs, errors


@dataclass(frozen=True, slots=True)
class ProblemType:
    title: str
    status: int
    when: str
    what_to_do: str


PROBLEMS: dict[str, ProblemType] = {
    "bad-request": ProblemType(
        "Bad Request",
        400,
        "The request cannot be understood as sent.",
        "Fix the request as `detail` says; sending it again unchanged fails again.",
    ),
    "bad-cursor": ProblemType(
        "Bad Cursor",
        400,
        "The `cursor` parameter is not one this API issued for this list: it was altered or "
        "cut short, it comes from a list with other filters or another sort, or the keys "
        "that sign cursors were rotated since.",
        "Follow the `next` link of a page exactly as given, or start again from the first "
        "page (no `cursor`).",
    ),
    "validation-error": ProblemType(
        "Unprocessable Content",
        422,
        "The request parsed, but fields are missing, of the wrong type, out of range or "
        "unknown; `errors` lists each one with its location and field.",
        "Correct every field listed in `errors` and send the request again.",
    ),
    "unauthorized": ProblemType(
        "Unauthorized",
        401,
        "No access token, or one that is expired, forged or not for this API.",
        "Get a token at POST /api/v1/auth/token (or refresh yours) and send it as "
        "`Authorization: Bearer <token>`.",
    ),
    "forbidden": ProblemType(
        "Forbidden",
        403,
        "The token is valid but lacks the scope the route needs (`required_scope`), or it is "
        "an operator client's token on a route that acts for a person.",
        "Use a token of an account or client that holds the scope named in `required_scope`.",
    ),
    "not-found": ProblemType(
        "Not Found",
        404,
        "No such movie, user, rating or import job (or it was deleted).",
        "Check the id; list endpoints show what exists.",
    ),
    "conflict": ProblemType(
        "Conflict",
        409,
        "The change collides with stored data: a taken username or email (`field` names it), "
        "an identity linked elsewhere, an Idempotency-Key reused for another request, or an "
        "import that can no longer be cancelled.",
        "Choose another value, or fetch the current state and decide again.",
    ),
    "rate-limited": ProblemType(
        "Too Many Requests",
        429,
        "This client (its account, operator client or address) spent its request budget "
        "(searches, filtered lists and offsets cost more than other requests; the "
        "`RateLimit-*` fields of each answer say what is left); or too many login attempts "
        "from this address, or too many wrong passwords for one account.",
        "Wait the number of seconds in `Retry-After` before trying again; follow `next` "
        "links rather than offsets, and keep answers you already have.",
    ),
    "login-failed": ProblemType(
        "Login Failed",
        400,
        "A third-party login could not be completed: unknown or reused state, a login "
        "finished in another browser than the one that started it, or an answer from the "
        "provider that cannot be trusted. Nothing was created.",
        "Start the login again from the same browser.",
    ),
    "service-unavailable": ProblemType(
        "Service Unavailable",
        503,
        "A service this request needs (task queue, login provider, login state) is not "
        "reachable right now, or this server runs as many requests as it takes at once.",
        "Retry after a short wait; nothing was half-done.",
    ),
    "database-unavailable": ProblemType(
        "Service Unavailable",
        503,
        "The database did not answer within the request's budget. A write may still have "
        "been stored; repeating it is safe (every write here is idempotent).",
        "Retry after the seconds in `Retry-After`.",
    ),
    "storage-full": ProblemType(
        "Service Unavailable",
        503,
        "The database's disk is nearly full, so writes are refused until operators free "
        "space (reads go on). Nothing of this request was stored.",
        "Retry after the seconds in `Retry-After`; operators: free space on the database's "
        "disk (`/ready` reports it).",
    ),
    "not-ready": ProblemType(
        "Service Unavailable",
        503,
        "A readiness probe found MongoDB not accepting a write or Redis not answering; "
        "`checks` says which.",
        "Operators: look at the named dependency. Load balancers: route elsewhere meanwhile.",
    ),
}


@docs(
    tags=["docs"],
    summary="What a problem type means (the page a problem's `type` URI points to)",
    parameters=[{"in": "path", "name": "name", "required": True, "schema": {"type": "string"}}],
    responses={200: {"description": "An HTML page", "content": {"text/html": {}}}, **errors(404)},
)
async def problem_page(request: web.Request) -> web.Response:
    """One problem type, for people reading a `type` URI."""
    name = request.match_info["name"]
    entry = PROBLEMS.get(name)
    if entry is None:
        raise web.HTTPNotFound()
    html = (
        f"<!doctype html><html lang=en><meta charset=utf-8><title>{escape(entry.title)}</title>"
        f"<h1>{escape(entry.title)} ({entry.status})</h1>"
        f"<h2>When it happens</h2><p>{escape(entry.when)}</p>"
        f"<h2>What to do</h2><p>{escape(entry.what_to_do)}</p>"
    )
    return web.Response(
        text=html, content_type="text/html", headers={"Cache-Control": "public, max-age=3600"}
    )


async def to_docs(request: web.Request) -> web.Response:
    """`/` and `/api/docs/` lead to the interactive documentation."""
    raise web.HTTPFound("/api/docs")
