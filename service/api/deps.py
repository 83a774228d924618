"""What routes share: the engine of the app, the default model, the JSON content-type check, prompt
warnings, the routing headers, and disconnect-aware waiting."""

from __future__ import annotations

import asyncio
import contextlib
import email.message
import json
import secrets
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

import shapesworld as shapes
from service.api.errors import ApiError
from service.api.schemas import RoutingInfo
from service.engine import Engine
from service.engine.types import GenerateResult

T = TypeVar("T")

DISCONNECT_POLL_S = 0.05
CLIENT_CLOSED = 499  # nginx's code for "client closed request": only ever seen in metrics and logs


def get_engine(request: Request) -> Engine:
    engine: Engine | None = getattr(request.app.state, "engine", None)
    if engine is None:
        raise ApiError(503, "not ready: loading model bundles", reason="not_ready")
    return engine


def model_name(request: Request, engine: Engine, asked: str | None) -> str:
    """The model a request runs on; recorded for the metrics label only if it is a loaded one."""
    name = asked or request.app.state.default_model
    if name in engine.pipelines:
        request.state.model = name
    return name


WARNING_HEADER = "X-Fewstep-Warning"


def is_json(content_type: str | None) -> bool:
    """application/json or any application/*+json, parameters (charset) allowed."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


async def require_json(request: Request) -> None:
    """415 naming application/json for a body sent as anything else (curl's -d sends a form by default).

    A dependency of the routes that take a JSON body: without it FastAPI validates the raw bytes and
    answers 422 "Input should be a valid dictionary", which points at the body instead of the header.
    """
    content_type = request.headers.get("content-type")
    if not is_json(content_type):
        sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        raise ApiError(
            415,
            f"the request body must be JSON: send 'Content-Type: application/json' (this request had {sent})",
            reason="invalid",
        )


def prompt_warnings(prompt: str, negative_prompt: str | None = None, model: str | None = None) -> list[str]:
    """What the reply warns about: prompt words `model` does not draw (never a refusal: the model
    still runs, but it draws noise for what it never learnt). The words it draws are the measured
    listing (`shapesworld.measured_vocabulary`, the same list `GET /info` gives); a vocabulary word left out
    of it ('crimson') comes with the word the model does draw ('red')."""
    listed = shapes.listed_vocabulary(model)
    warnings = []
    for field, text in (("prompt", prompt), ("negative_prompt", negative_prompt)):
        unknown = shapes.unlisted_words(text, listed) if text else []
        if unknown:
            named = [f"{w} (write {shapes.canonical_of(w)!r})" if shapes.canonical_of(w) else w for w in unknown]
            warnings.append(
                f"{field}: words outside the model's vocabulary: {', '.join(named)} "
                "(the model draws noise for them; GET /info lists the vocabulary)"
            )
    return warnings


def warning_headers(warnings: list[str]) -> dict[str, str]:
    """The warnings as one header (JSON-escaped, so any prompt text stays ASCII)."""
    if not warnings:
        return {}
    return {WARNING_HEADER: "; ".join(json.dumps(w)[1:-1] for w in warnings)}


def routing_info(result: GenerateResult) -> RoutingInfo | None:
    """The reply's `routing`: the model asked for, the one that served and why."""
    r = result.routing
    if r is None:
        return None
    return RoutingInfo(
        quality=r.hint,
        asked_model=r.asked.model,
        asked_steps=r.asked.steps,
        model=r.served.model,
        steps=r.served.steps,
        reason=r.reason,
        prompt_class=r.prompt_class,
        predicted_s=r.predicted_s,
        objective_s=r.objective_s,
    )


def routing_headers(request: Request, result: GenerateResult) -> dict[str, str]:
    """The routing as X-Fewstep-* headers (every route, PNG replies too); the HTTP metrics' `model`
    label becomes the model that served the request."""
    request.state.model = result.model
    r = result.routing
    if r is None:
        return {}
    headers = {
        "X-Fewstep-Quality": r.hint,
        "X-Fewstep-Asked-Model": r.asked.model,
        "X-Fewstep-Asked-Steps": str(r.asked.steps),
        "X-Fewstep-Model": r.served.model,
        "X-Fewstep-Steps": str(r.served.steps),
        "X-Fewstep-Route-Reason": r.reason,
    }
    if r.predicted_s is not None:
        headers["X-Fewstep-Predicted-Seconds"] = f"{r.predicted_s:.6f}"
    if r.objective_s is not None:
        headers["X-Fewstep-Objective-Seconds"] = f"{r.objective_s:g}"
    return headers


def random_seed() -> int:
    """Seeds clients did not choose: 31 bits, so they fit any client's integer type."""
    return secrets.randbelow(2**31)


async def until_disconnected(request: Request, work: Awaitable[GenerateResult]) -> GenerateResult:
    """Await `work`, cancelling it if the client goes away (the engine then drops it from the queue)."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=DISCONNECT_POLL_S)
            if done:
                return task.result()
            if await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                raise ApiError(CLIENT_CLOSED, "client closed the request")
    finally:
        if not task.done():
            task.cancel()
