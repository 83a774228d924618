"""Every error as JSON in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, never a traceback.

One shape for every route keeps clients simple (the OpenAI SDKs parse it, and so can curl users).
Validation errors name the field in `param`; engine refusals map to their status (404, 429 with
Retry-After, 503, 504, 500); anything unexpected is logged with its traceback and answered with a
plain 500.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.engine import EngineError, QueueFull
from service.metrics import Metrics
from service.pipeline import JobError

log = logging.getLogger(__name__)

_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "invalid_value"),
    429: ("rate_limit_error", "queue_full"),
    500: ("server_error", "internal_error"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "timeout"),
}


class ApiError(Exception):
    """An error the routes raise on purpose; `reason` (if any) is counted as a rejection."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        reason: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.reason, self.headers = reason, headers


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    kind, default_code = _TYPES.get(status, ("server_error" if status >= 500 else "invalid_request_error", None))
    body = {"error": {"message": message, "type": kind, "param": param, "code": code or default_code}}
    return JSONResponse(body, status_code=status, headers=headers)


def validation_param(loc: tuple[object, ...]) -> str | None:
    """('body', 'n') -> 'n'; ('body', 'x', 0) -> 'x.0'; a body that is not JSON -> None."""
    parts = [str(p) for p in loc[1:]] if loc and loc[0] in ("body", "query", "path", "header") else []
    return ".".join(parts) or None


def engine_error_response(e: EngineError) -> JSONResponse:
    headers = None
    if isinstance(e, QueueFull):
        headers = {"Retry-After": str(math.ceil(e.retry_after_s))}
    code = {"unknown_model": "model_not_found", "draining": "draining"}.get(e.reason)
    param = "model" if e.reason == "unknown_model" else None
    return error_response(e.status, str(e), param=param, code=code, headers=headers)


def install(app: FastAPI, metrics: Metrics) -> None:
    """Register the handlers that turn every failure into the JSON error shape."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, e: ApiError) -> JSONResponse:
        if e.reason:
            metrics.reject(e.reason)
        return error_response(e.status, e.message, e.param, e.code, e.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, e: RequestValidationError) -> JSONResponse:
        metrics.reject("invalid")
        errors = e.errors()
        first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
        param = validation_param(tuple(first.get("loc", ())))
        if first.get("type") == "json_invalid":
            param, message = None, "the request body is not valid JSON"
        elif first.get("type") == "extra_forbidden":
            message = f"{param}: unknown field"
        elif param:
            message = f"{param}: {first.get('msg')}"
        else:
            message = f"request body: {first.get('msg')}"
        if len(errors) > 1:
            others = [validation_param(tuple(x.get("loc", ()))) or "body" for x in errors[1:]]
            message += f" (also invalid: {', '.join(others)})"
        return error_response(422, message, param=param)

    @app.exception_handler(JobError)
    async def _job_error(request: Request, e: JobError) -> JSONResponse:
        return error_response(422, f"{e.field}: {e}", param=e.field)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, e: EngineError) -> JSONResponse:
        return engine_error_response(e)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if e.status_code == 404 else str(e.detail)
        return error_response(e.status_code, message, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")
