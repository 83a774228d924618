"""Every error as JSON in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`, never a traceback.

One shape for every route keeps clients simple (the OpenAI SDKs parse it, and so can curl users).
The status follows HTTP's conventions: a body that is not JSON is 400, a body sent as another
content type 415 (`service.api.deps.require_json`), a well-formed body with an invalid field 422 on
the native routes. The OpenAI-compatible routes (`/v1/...`) answer invalid fields with 400
`invalid_request_error`, as OpenAI's API does, so its SDKs raise `BadRequestError` there too.
Validation errors name the field in `param`, and an unknown field comes with the closest known
name. The engine's domain errors (`service.errors`) are mapped here and nowhere else: their kind
to a status (invalid argument 422, or 400 on `/v1`; not found 404; overloaded 429 with
Retry-After; unavailable 503; deadline 504; internal 500) and their domain field to the request
field of the route (`guidance` is `guidance_scale` on `/generate`; `width`/`height` are `size` on
`/v1/images/generations`). Anything unexpected is logged with its traceback and answered with a
plain 500.
"""

from __future__ import annotations

import difflib
import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import EngineError, ErrorKind, InvalidArgument, QueueFull
from service.metrics import Metrics

log = logging.getLogger(__name__)

_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("invalid_request_error", "invalid_api_key"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    406: ("invalid_request_error", "not_acceptable"),
    413: ("invalid_request_error", "request_too_large"),
    415: ("invalid_request_error", "unsupported_media_type"),
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


STATUS = {
    ErrorKind.INVALID_ARGUMENT: 422,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.OVERLOADED: 429,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.INTERNAL: 500,
}
NATIVE_FIELDS = {"guidance": "guidance_scale"}  # domain field -> request field of the native routes
OPENAI_FIELDS = {"width": "size", "height": "size"}  # ... of /v1/images/generations
_CODES = {
    "unknown_model": "model_not_found",
    "draining": "draining",
    "over_objective": "over_objective",
}  # error.code by the error's reason


def request_field(field: str, openai: bool = False) -> str:
    """The request field a domain field arrived as on the route called (what `param` names)."""
    return (OPENAI_FIELDS if openai else NATIVE_FIELDS).get(field, field)


def engine_error_response(e: EngineError, openai: bool = False) -> JSONResponse:
    """The HTTP answer to a domain error: status from its kind, `param` in the route's field names."""
    status = STATUS[e.kind]
    message, param = str(e), None
    if isinstance(e, InvalidArgument):
        status = 400 if openai else status  # OpenAI answers invalid parameters with 400
        param = request_field(e.field, openai)
        message = f"{param}: {e}"
    elif e.kind is ErrorKind.NOT_FOUND:
        param = "model"
    headers = {"Retry-After": str(math.ceil(e.retry_after_s))} if isinstance(e, QueueFull) else None
    return error_response(status, message, param=param, code=_CODES.get(e.reason), headers=headers)


def openai_route(request: Request) -> bool:
    """The OpenAI-compatible routes, whose invalid requests are 400 (OpenAI's status), not 422."""
    return request.url.path.startswith("/v1/")


def known_fields(request: Request) -> list[str]:
    """The field names (and accepted other names) of the body model of the route that was called."""
    from service.api.schemas import FIELD_ALIASES

    route = request.scope.get("route")
    field = getattr(route, "body_field", None)
    model = getattr(getattr(field, "field_info", None), "annotation", None)
    fields = list(getattr(model, "model_fields", {}))
    return fields + [alias for alias, target in FIELD_ALIASES.items() if target in fields]


def unknown_field_message(name: str, fields: list[str]) -> str:
    """'guidnce: unknown field; did you mean 'guidance'?' (or the list of known fields)."""
    close = difflib.get_close_matches(name, fields, n=1, cutoff=0.6)
    if close:
        return f"{name}: unknown field; did you mean {close[0]!r}?"
    if fields:
        return f"{name}: unknown field; the fields are {', '.join(fields)}"
    return f"{name}: unknown field"


def validation_message(request: Request, error: dict) -> tuple[int, str, str | None]:
    """(status, message, param) for one pydantic error of a request body."""
    param = validation_param(tuple(error.get("loc", ())))
    if error.get("type") == "json_invalid":
        detail = (error.get("ctx") or {}).get("error")
        return 400, "the request body is not valid JSON" + (f" ({detail})" if detail else ""), None
    if error.get("type") == "extra_forbidden" and param:
        message = unknown_field_message(param, known_fields(request))
    elif param:
        message = f"{param}: {error.get('msg')}"
    else:
        message = f"request body: {error.get('msg')}"
    return (400 if openai_route(request) else 422), message, param


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
        status, message, param = validation_message(request, first)
        if len(errors) > 1:
            others = [validation_param(tuple(x.get("loc", ()))) or "body" for x in errors[1:]]
            message += f" (also invalid: {', '.join(others)})"
        return error_response(status, message, param=param)

    @app.exception_handler(EngineError)
    async def _engine_error(request: Request, e: EngineError) -> JSONResponse:
        return engine_error_response(e, openai=openai_route(request))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if e.status_code == 404 else str(e.detail)
        return error_response(e.status_code, message, headers=getattr(e, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, e: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal server error")
