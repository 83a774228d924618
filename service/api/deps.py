"""What routes share: the engine of the app, the default model, and disconnect-aware waiting."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Awaitable
from typing import TypeVar

from fastapi import Request

from service.api.errors import ApiError
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
