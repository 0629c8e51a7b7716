"""HTTP handlers: parse, validate, call a service, shape the response."""

from __future__ import annotations

from aiohttp import web
from beanie import PydanticObjectId

from api.middlewares import PRINCIPAL
from api.security import Principal


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def caller_id(request: web.Request) -> PydanticObjectId:
    """The authenticated user's id."""
    return PydanticObjectId(principal(request).subject)
