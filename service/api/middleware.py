"""Pure ASGI middleware: the body size limit (413) and the request-duration histogram.

Pure ASGI rather than `BaseHTTPMiddleware`, which would wrap `receive` in a way that hides client
disconnects from the routes (they poll for them to drop abandoned requests from the queue).

The body is read here, up to the limit, before the app sees it: bodies are small (a prompt and a
few numbers), so buffering costs nothing, and a client that streams megabytes is cut off at the
limit instead of after FastAPI has buffered all of it.
"""

from __future__ import annotations

import json
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.metrics import Metrics

_BODY_METHODS = {"POST", "PUT", "PATCH"}


class ServiceMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics, max_body_bytes: int) -> None:
        self.app, self.metrics, self.max_body_bytes = app, metrics, max_body_bytes

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

        if scope["method"] in _BODY_METHODS:
            body = await self._read_body(scope, receive)
            if body is None:
                self.metrics.reject("too_large")
                await _send_413(send_timed, self.max_body_bytes)
                return
            receive = _replay(body, receive)
        await self.app(scope, receive, send_timed)

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None once it exceeds the limit (by Content-Length or by counting)."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        return None
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
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    def _observe(self, scope: Scope, status: int, seconds: float) -> None:
        route = scope.get("route")
        path = getattr(route, "path", None) or "unmatched"
        model = (scope.get("state") or {}).get("model", "")
        self.metrics.request_duration.labels(path, str(status), model).observe(seconds)


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


async def _send_413(send: Send, limit: int) -> None:
    body = json.dumps(
        {
            "error": {
                "message": f"request body over {limit} bytes",
                "type": "invalid_request_error",
                "param": None,
                "code": "request_too_large",
            }
        }
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 413, "headers": headers})
    await send({"type": "http.response.body", "body": body})
