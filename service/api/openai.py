"""POST /v1/images/generations: the subset of OpenAI's Images API that fewstep serves.

`prompt`, `n`, `size` (only the model's resolution), `response_format` (only `b64_json`: fewstep
keeps no image store to serve URLs from) and `model`. Errors use OpenAI's shape, as every route
does, so the OpenAI SDKs raise their usual exceptions.
"""

from __future__ import annotations

import time

from fastapi import APIRouter, Depends, Request
from starlette.concurrency import run_in_threadpool

from service.api.auth import KeyChecker
from service.api.deps import get_engine, model_name, random_seed, until_disconnected
from service.api.encode import encode_b64
from service.api.errors import ApiError
from service.api.routes import ERRORS
from service.api.schemas import OpenAIImage, OpenAIImageBody, OpenAIImagesResponse
from service.engine import GenerateRequest
from service.pipeline import JobError


def build_router(keys: KeyChecker) -> APIRouter:
    router = APIRouter()

    @router.post(
        "/v1/images/generations",
        response_model=OpenAIImagesResponse,
        responses=ERRORS,
        dependencies=[Depends(keys)],
        tags=["openai"],
    )
    async def images_generations(body: OpenAIImageBody, request: Request) -> OpenAIImagesResponse:
        """OpenAI-compatible image generation (b64_json only)."""
        engine = get_engine(request)
        width = height = None
        if body.size is not None:
            width, height = (int(v) for v in body.size.split("x"))
        job = GenerateRequest(
            model=model_name(request, engine, body.model),
            prompt=body.prompt,
            seed=random_seed(),
            n=body.n,
            width=width,
            height=height,
        )
        try:
            result = await until_disconnected(request, engine.generate(job))
        except JobError as e:
            if e.field in ("width", "height"):
                raise ApiError(422, f"size: {e}", param="size") from None
            raise
        encoded = await run_in_threadpool(encode_b64, result.images, "png")
        return OpenAIImagesResponse(created=int(time.time()), data=[OpenAIImage(b64_json=b) for b in encoded])

    return router
