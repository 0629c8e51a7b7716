"""HTTP handlers: parse, validate, call a service, shape the response."""

from __future__ import annotations

from aiohttp import web

from api.middlewares import PRINCIPAL
from core.errors import Forbidden
from core.security import Principal
from models import PydanticObjectId


def principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


def person_id(request: web.Request) -> PydanticObjectId:
    """The person the token speaks for; 403 for a client token, which speaks for none."""
    caller = principal(request)
    if caller.is_client:
        raise Forbidden("This route acts for a person; a client's token cannot use it.")
    return PydanticObjectId(caller.subject)
