"""The native routes: POST /generate, GET /v1/models, probes, /metrics and the playground page."""

from __future__ import annotations

import time
from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

from service.api.auth import KeyChecker
from service.api.deps import get_engine, model_name, random_seed, until_disconnected
from service.api.encode import MEDIA_TYPES, encode_b64, encode_image
from service.api.schemas import ErrorBody, GenerateBody, GeneratedImage, GenerateResponse, ModelCard, ModelList, Timings
from service.engine import GenerateRequest
from service.metrics import CONTENT_TYPE

ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "a body that cannot be parsed at all (e.g. not UTF-8)",
        401: "missing or wrong API key",
        404: "unknown model",
        413: "body too large",
        422: "invalid field (named in error.param)",
        429: "queue full (see Retry-After)",
        500: "backend error in this request's batch",
        503: "not ready or draining",
        504: "deadline passed",
    }.items()
}


def wants_raw_png(request: Request, n: int) -> bool:
    """`Accept: image/png` (and not JSON) with one image: answer with the PNG itself."""
    accept = request.headers.get("accept", "").lower()
    return n == 1 and "image/png" in accept and "application/json" not in accept


def build_router(keys: KeyChecker) -> APIRouter:
    router = APIRouter()
    auth = [Depends(keys)]

    @router.post(
        "/generate",
        response_model=GenerateResponse,
        responses={**ERRORS, 200: {"content": {"image/png": {}}, "description": "JSON, or PNG with Accept: image/png"}},
        dependencies=auth,
        tags=["generate"],
    )
    async def generate(body: GenerateBody, request: Request) -> Response:
        """Generate `n` images of `prompt`; image j uses seed + j. Seeds and timings are always returned."""
        start = time.perf_counter()
        engine = get_engine(request)
        seed = random_seed() if body.seed is None else body.seed
        job = GenerateRequest(
            model=model_name(request, engine, body.model),
            prompt=body.prompt,
            seed=seed,
            n=body.n,
            steps=body.steps,
            guidance=body.guidance_scale,
            negative_prompt=body.negative_prompt,
            width=body.width,
            height=body.height,
        )
        result = await until_disconnected(request, engine.generate(job))
        timing_headers = {"X-Queue-Seconds": f"{result.queue_s:.6f}", "X-Compute-Seconds": f"{result.compute_s:.6f}"}
        if wants_raw_png(request, body.n):
            png = await run_in_threadpool(encode_image, result.images[0], "png")
            total = time.perf_counter() - start
            headers = {"X-Seed": str(seed), **timing_headers, "X-Total-Seconds": f"{total:.6f}"}
            return Response(png, media_type=MEDIA_TYPES["png"], headers=headers)
        encoded = await run_in_threadpool(encode_b64, result.images, body.output_format)
        resolution = int(result.images.shape[1])
        response = GenerateResponse(
            model=result.model,
            steps=result.steps,
            guidance_scale=result.guidance,
            output_format=body.output_format,
            width=resolution,
            height=resolution,
            seeds=result.seeds,
            images=[GeneratedImage(b64=b, seed=s) for b, s in zip(encoded, result.seeds, strict=True)],
            timings=Timings(queue_s=result.queue_s, compute_s=result.compute_s, total_s=time.perf_counter() - start),
            batch_images=result.batch_images,
        )
        return JSONResponse(response.model_dump(), headers=timing_headers)

    @router.get(
        "/v1/models", response_model=ModelList, responses={401: ERRORS[401]}, dependencies=auth, tags=["models"]
    )
    async def models(request: Request) -> ModelList:
        """The loaded bundles: step counts, guidance range, resolution and their evaluation figures."""
        engine = get_engine(request)
        cards = []
        for p in engine.pipelines.values():
            m = p.manifest
            cards.append(
                ModelCard(
                    id=p.name,
                    resolution=m.resolution,
                    steps=sorted(m.steps),
                    default_steps=m.default_steps,
                    guidance={
                        "min": m.guidance.min,
                        "max": m.guidance.max,
                        "default": m.guidance.default,
                        "network_input": m.guidance.network_input,
                    },
                    backend=p.backend,
                    evaluation=m.evaluation,
                )
            )
        return ModelList(data=cards)

    @router.get("/healthz", tags=["probes"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @router.get("/readyz", tags=["probes"], responses={503: {"description": "loading, warming up or draining"}})
    async def readyz(request: Request) -> JSONResponse:
        """Readiness: 200 only after warm-up and before draining."""
        engine = getattr(request.app.state, "engine", None)
        if engine is None:
            return JSONResponse({"status": "not ready", "reason": "loading model bundles"}, status_code=503)
        if not engine.ready:
            return JSONResponse({"status": "not ready", "reason": engine.not_ready_reason()}, status_code=503)
        return JSONResponse({"status": "ready", "models": list(engine.pipelines)})

    @router.get("/metrics", tags=["probes"], response_class=Response)
    async def metrics(request: Request) -> Response:
        """Prometheus text exposition."""
        return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)

    @router.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def playground() -> HTMLResponse:
        page = resources.files("service").joinpath("static/playground.html").read_text(encoding="utf-8")
        return HTMLResponse(page)

    return router
