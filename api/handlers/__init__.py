"""HTTP handlers: parse, validate, call a service, shape the response."""

from __future__ import annotations

from aiohttp import web
from beanie import PydanticObjectId

from api.errors import Forbidden
from api.middlewares import PRINCIPAL
from api.security import Principal


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def caller_id(request: web.Request) -> PydanticObjectId:
    """The authenticated user's id; a client's token speaks for no user."""
    caller = principal(request)
    if caller.is_client:
        raise Forbidden("This route acts for a person; a client's token cannot use it.")
    return PydanticObjectId(caller.subject)
