"""Pure ASGI middleware: the body size limit (413), the body-read timeout (408) and the
request-duration histogram.

Pure ASGI rather than `BaseHTTPMiddleware`, which would wrap `receive` in a way that hides client
disconnects from the routes (they poll for them to drop abandoned requests from the queue).

The body is read here, up to the limit, before the app sees it: bodies are small (a prompt and a
few numbers), so buffering costs nothing, and a client that streams megabytes is cut off at the
limit instead of after FastAPI has buffered all of it.

The whole read is also bounded in time (`FEWSTEP_BODY_TIMEOUT_S`). uvicorn has no such bound: its
only timeout is keep-alive, between requests, so a client that trickles a body a byte at a time
holds its connection (and a file descriptor, and a coroutine) for as long as it likes; enough of
them exhaust the server. Past the bound the client gets 408 with `Connection: close`, and uvicorn
closes the socket. The clock starts when the headers are complete (when uvicorn calls the app):
headers that trickle in are uvicorn's to bound, and it does not; a reverse proxy in front does
(docs/operating/security.md).
"""

from __future__ import annotations

import asyncio
import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class _TooLarge(Exception):
    """The body passed `max_body_bytes` (by its Content-Length or by counting)."""


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int, body_timeout_s: float = 10.0) -> None:
        if body_timeout_s <= 0:
            raise ValueError(f"body_timeout_s must be > 0, got {body_timeout_s}")
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_timed(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._observe(scope, status, time.perf_counter() - start)

        if scope["method"] in _BODY_METHODS or _declares_body(scope):
            try:
                async with asyncio.timeout(self.body_timeout_s):
                    body = await self._read_body(scope, receive)
            except _TooLarge:
                self.metrics.reject("too_large")
                message = f"request body over {self.max_body_bytes} bytes"
                await _send_error(send_timed, 413, message, "request_too_large")
                return
            except TimeoutError:
                self.metrics.reject("body_timeout")
                message = f"request body not received within {self.body_timeout_s:g} s"
                await _send_error(send_timed, 408, message, "request_timeout", close=True)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send_timed)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes:
        """The whole body; `_TooLarge` once it exceeds the limit (by Content-Length or by counting)."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        raise _TooLarge
                except ValueError:
                    pass
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _TooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        model = (scope.get("state") or {}).get("model", "")
        self.metrics.request_duration.labels(path, str(status), model).observe(seconds)


def _declares_body(scope: Scope) -> bool:
    """A request of any method that announces a body (a GET with one is legal HTTP): read and
    bounded like the others, or a client could trickle it past the route's answer."""
    for name, value in scope.get("headers", []):
        if name == b"transfer-encoding" or (name == b"content-length" and value.strip() not in (b"", b"0")):
            return True
    return False


def _replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that returns the buffered body once, then the client's later messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_error(send: Send, status: int, message: str, code: str, close: bool = False) -> None:
    """Our JSON error shape, sent before the app runs; `close` asks the server to drop the connection
    (the rest of an unread body would otherwise be parsed as the next request)."""
    body = json.dumps(
        {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
