"""POST /v1/images/generations: the subset of OpenAI's Images API that fewstep serves.

`prompt`, `n`, `size` (only the model's resolution), `response_format` (only `b64_json`: fewstep
keeps no image store to serve URLs from) and `model`. Errors use OpenAI's shape and status codes
(400 `invalid_request_error` naming `param` for any invalid parameter, 401 for a key, 404 for an
unknown model, 429 when the queue is full), so the OpenAI SDKs raise their usual exceptions:
`BadRequestError`, `AuthenticationError`, `NotFoundError`, `RateLimitError`. Prompt words outside
the vocabulary come back in the `X-Fewstep-Warning` header (the body keeps OpenAI's shape), and so
does the routing under a latency objective (`quality`: auto, best or fast; the model asked for, the
model that served and why in the X-Fewstep-* headers).
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from service.api.auth import KeyChecker
from service.api.deps import (
    get_engine,
    model_name,
    prompt_warnings,
    random_seed,
    require_json,
    routing_headers,
    until_disconnected,
    warning_headers,
)
from service.api.encode import encode_b64
from service.api.routes import ERRORS as NATIVE_ERRORS
from service.api.schemas import OpenAIImage, OpenAIImageBody, OpenAIImagesResponse
from service.engine import GenerateRequest

ERRORS = {
    **{code: v for code, v in NATIVE_ERRORS.items() if code not in (406, 422)},
    400: {**NATIVE_ERRORS[400], "description": "invalid JSON or an invalid parameter (named in error.param)"},
}


def build_router(keys: KeyChecker) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/images/generations",
        response_model=OpenAIImagesResponse,
        responses=ERRORS,
        dependencies=[Depends(keys), Depends(require_json)],
        tags=["openai"],
    )
    async def images_generations(body: OpenAIImageBody, request: Request, response: Response) -> OpenAIImagesResponse:
        """OpenAI-compatible image generation (b64_json only)."""
        engine = get_engine(request)
        model = model_name(request, engine, body.model)
        response.headers.update(warning_headers(prompt_warnings(body.prompt, model=model)))
        width = height = None
        if body.size is not None:
            width, height = (int(v) for v in body.size.split("x"))
        job = GenerateRequest(
            model=model,
            prompt=body.prompt,
            seed=random_seed(),
            n=body.n,
            width=width,
            height=height,
            quality=body.quality,
        )
        result = await until_disconnected(request, engine.generate(job))
        response.headers.update(routing_headers(request, result))
        encoded = await run_in_threadpool(encode_b64, result.images, "png")
        return OpenAIImagesResponse(created=int(time.time()), data=[OpenAIImage(b64_json=b) for b in encoded])

    return router
