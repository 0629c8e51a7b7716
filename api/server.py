"""Serving the app: aiohttp's runner, with its HTTP parser's errors in problem+json too.

A request line or header aiohttp cannot parse (a URL or header past its limits, a malformed
request line) never reaches the app or its middlewares: aiohttp answers it in its protocol
handler, in text/plain. aiohttp has no hook for that answer, so the runner here builds its
server with a protocol handler that renders it as every other error is rendered.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from api.appkeys import SETTINGS
from api.http import PROBLEM_JSON
from api.middlewares import SERVER_NAME
from core.settings import Settings

log = logging.getLogger("api.server")

PARSER_ERRORS = {
    400: "The request could not be parsed (request line, URL, or a header too long or malformed).",
    413: "The request is too large.",
    431: "The request's headers are too large.",
}


class ProblemRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering parser errors with problem+json and closing a
    connection whose request head is not complete `header_timeout` seconds after it began
    (aiohttp has no such timer: a half-sent first request held its connection for good)."""

    def __init__(self, *args: Any, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.opened_at = 0.0
        self._head_timer: asyncio.TimerHandle | None = None

    @property
    def busy(self) -> bool:
        """Whether a request is being answered (or is queued to be)."""
        return self._request_in_progress or bool(self._messages)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.opened_at = self._loop.time()
        super().connection_made(transport)
        self._start_head_timer()  # a connection that sends nothing at all

    def data_received(self, data: bytes) -> None:
        heads = self._request_count
        super().data_received(data)
        if self._request_count > heads:
            self._stop_head_timer()  # a whole request head arrived
        elif data and self._head_timer is None and not self.busy:
            self._start_head_timer()  # the first bytes of the next request on this connection

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_timer()
        super().connection_lost(exc)

    def _start_head_timer(self) -> None:
        self._stop_head_timer()
        self._head_timer = self._loop.call_later(self.header_timeout, self._head_too_slow)

    def _stop_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.busy:
            log.info("request head too slow; connection closed")
            self.force_close()

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's own: too late for an answer
            raise ConnectionError("Response is sent already, cannot send another response")
        # A client's malformed request, not our failure: no traceback at ERROR level, and
        # not its text either (the parser quotes the offending line, which may be a token).
        log.info("unparsable request", extra={"status": status, "error": type(exc).__name__})
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        body = {
            "type": "about:blank",
            "title": phrase,
            "status": status,
            "detail": PARSER_ERRORS.get(status, "The request could not be handled."),
        }
        response = web.Response(
            body=orjson.dumps(body),
            status=status,
            content_type=PROBLEM_JSON,
            headers={"Server": SERVER_NAME, "X-Content-Type-Options": "nosniff"},
        )
        response.force_close()  # the stream cannot be trusted past a parse error
        return response


class ProblemServer(web.Server):
    """aiohttp's server with ProblemRequestHandler, holding at most `max_connections`: past
    it, the oldest connection that is not being answered (idle keep-alive, or a request
    head still arriving) is closed; when every one is busy, the new one is."""

    header_timeout: float
    max_connections: int

    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(
            self, loop=self._loop, header_timeout=self.header_timeout, **self._kwargs
        )

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) <= self.max_connections:
            return
        idle = [
            h
            for h in self._connections
            if isinstance(h, ProblemRequestHandler) and h is not handler and not h.busy
        ]
        shed = min(idle, key=lambda h: h.opened_at) if idle else handler
        log.warning("too many connections; one closed", extra={"open": len(self._connections)})
        shed.force_close()


class ProblemAppRunner(web.AppRunner):
    """An AppRunner whose connections are served by ProblemRequestHandler."""

    def __init__(
        self, app: web.Application, *, header_timeout: float, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(app, **kwargs)
        self._header_timeout = header_timeout
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer  # the same server, another protocol factory
        assert isinstance(server, ProblemServer)
        server.header_timeout = self._header_timeout
        server.max_connections = self._max_connections
        return server


def make_runner(app: web.Application, settings: Settings, **kwargs: Any) -> ProblemAppRunner:
    """The runner with the settings' connection limits: the head and idle timeouts, and
    the most connections one process holds."""
    return ProblemAppRunner(
        app,
        access_log=None,
        header_timeout=settings.http_header_timeout,
        max_connections=settings.http_max_connections,
        keepalive_timeout=settings.http_keepalive_timeout,
        **kwargs,
    )


async def serve_app(app: web.Application, *, sock: socket.socket, shutdown_timeout: float) -> None:
    """Serve on `sock` until SIGTERM or SIGINT, then stop accepting and finish in-flight
    requests."""
    runner = make_runner(app, app[SETTINGS], shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await web.SockSite(runner, sock).start()
        await stop.wait()
    finally:
        await runner.cleanup()
