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
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from api.http import PROBLEM_JSON

log = logging.getLogger("api.server")

PARSER_ERRORS = {
    400: "The request could not be parsed (request line, URL, or a header too long or malformed).",
    413: "The request is too large.",
    431: "The request's headers are too large.",
}


class ProblemRequestHandler(RequestHandler):
    """aiohttp's protocol handler, answering parser errors with problem+json."""

    def handle_error(
        self,
        request: Any,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:  # as aiohttp's own: too late for an answer
            raise ConnectionError("Response is sent already, cannot send another response")
        # A client's malformed request, not our failure: no traceback at ERROR level.
        log.info("unparsable request", extra={"status": status, "reason": str(exc)[:200]})
        phrase = HTTPStatus(status).phrase if status in HTTPStatus._value2member_map_ else "Error"
        body = {
            "type": "about:blank",
            "title": phrase,
            "status": status,
            "detail": PARSER_ERRORS.get(status, "The request could not be handled."),
        }
        response = web.Response(body=orjson.dumps(body), status=status, content_type=PROBLEM_JSON)
        response.force_close()  # the stream cannot be trusted past a parse error
        return response


class ProblemServer(web.Server):
    def __call__(self) -> RequestHandler:
        return ProblemRequestHandler(self, loop=self._loop, **self._kwargs)


class ProblemAppRunner(web.AppRunner):
    """An AppRunner whose connections are served by ProblemRequestHandler."""

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = ProblemServer  # the same server, another protocol factory
        return server


async def serve_app(app: web.Application, *, host: str, port: int, shutdown_timeout: float) -> None:
    """Serve until SIGTERM or SIGINT, then stop accepting and finish in-flight requests."""
    runner = ProblemAppRunner(app, access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        # reuse_port: the kernel spreads connections over WEB_CONCURRENCY processes.
        await web.TCPSite(runner, host, port, reuse_port=True).start()
        await stop.wait()
    finally:
        await runner.cleanup()
