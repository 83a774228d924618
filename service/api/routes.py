"""The native routes: POST /generate, GET /v1/models, GET /info, probes, /metrics and the playground page.

The handlers are module-level functions of the request (the engine, the default model and the
metrics live on `app.state`), so each can be imported and called or mounted alone in a test;
`build_router` only wires them to their paths with the app's API-key dependency.
"""

from __future__ import annotations

import time
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.concurrency import run_in_threadpool

import fewstep
import shapesworld as shapes
from fewstep.bundle import Manifest
from service.api.auth import KeyChecker
from service.api.deps import (
    get_engine,
    model_name,
    prompt_warnings,
    random_seed,
    require_json,
    routing_headers,
    routing_info,
    until_disconnected,
    warning_headers,
)
from service.api.encode import MEDIA_TYPES, encode_b64, encode_image
from service.api.errors import ApiError
from service.api.schemas import (
    DEFAULT_PROMPT,
    ErrorBody,
    GenerateBody,
    GeneratedImage,
    GenerateResponse,
    ModelCard,
    ModelList,
    ServiceInfo,
    Timings,
)
from service.engine import GenerateRequest
from service.metrics import CONTENT_TYPE
from service.pipeline import Pipeline

ERRORS = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "a body that is not valid JSON",
        401: "missing or wrong API key",
        404: "unknown model",
        406: "Accept: image/png with n > 1 (one PNG per reply; ask for JSON to get several)",
        413: "body too large",
        415: "a body sent as another Content-Type than application/json",
        422: "invalid field (named in error.param)",
        429: "queue full, or (FEWSTEP_SLO__SHED) predicted past the latency objective (see Retry-After)",
        500: "backend error in this request's batch",
        503: "not ready or draining",
        504: "deadline passed",
    }.items()
}


def _accepts(accept: str, *types: str) -> bool:
    return any(t in accept for t in types)


def wants_raw_png(request: Request, n: int) -> bool:
    """`Accept: image/png` (and not JSON) with one image: answer with the PNG itself.

    With n > 1 that is a 406 (`check_acceptable`): one reply holds one PNG, and silently answering
    JSON to a client that asked for an image breaks it further along."""
    accept = request.headers.get("accept", "").lower()
    return n == 1 and "image/png" in accept and "application/json" not in accept


def check_acceptable(request: Request, n: int) -> None:
    """406 when the client accepts PNG only (no JSON, no wildcard) and asked for several images."""
    accept = request.headers.get("accept", "").lower()
    if n > 1 and "image/png" in accept and not _accepts(accept, "application/json", "*/*", "application/*"):
        raise ApiError(
            406,
            f"Accept: image/png answers with one image, and this request asks for n={n}: send "
            "'Accept: application/json' to get all of them in one reply (images[].b64, each with its seed), "
            "or send n=1 requests with seeds seed, seed + 1, ... (the same images)",
            param="n",
            reason="invalid",
        )


def export_time(manifest: Manifest) -> int:
    """The bundle's export time in Unix seconds (0 if unknown)."""
    return 0 if manifest.exported_at is None else int(manifest.exported_at.timestamp())


def clean_sha(value: Any) -> Any:
    """A git sha without the `-dirty` mark: a committed model is identified by its weights' sha256,
    and an uncommitted edit elsewhere in the tree at export or evaluation time says nothing about it."""
    return value.removesuffix("-dirty") if isinstance(value, str) else value


def clean_rows(value: Any) -> Any:
    """`value` with every `git_sha` cleaned (evaluation rows nest them)."""
    if isinstance(value, dict):
        return {k: clean_sha(v) if k == "git_sha" else clean_rows(v) for k, v in value.items()}
    if isinstance(value, list):
        return [clean_rows(v) for v in value]
    return value


def provenance(manifest: Manifest) -> dict[str, Any]:
    """Where the bundle came from: the weights' sha256, the commit and training step, the export time."""
    source = manifest.source
    out = {k: source.get(k) for k in ("weights_sha256", "git_sha", "train_step") if source.get(k) is not None}
    if "git_sha" in out:
        out["git_sha"] = clean_sha(out["git_sha"])
    if manifest.exported_at is not None:
        out["exported_at"] = manifest.exported_at.isoformat()
    return out


GENERATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    200: {
        "content": {"image/png": {}},
        "description": "JSON, or with Accept: image/png and n = 1 the PNG itself (seed and timings in "
        "X-Seed and X-*-Seconds headers). Prompt words outside the vocabulary are named in `warnings` "
        "and the X-Fewstep-Warning header. The model asked for, the model and steps that served the "
        "request and why are in `routing` and the X-Fewstep-Asked-Model, X-Fewstep-Model, X-Fewstep-Steps "
        "and X-Fewstep-Route-Reason headers.",
    },
}


async def generate(body: GenerateBody, request: Request) -> Response:
    """Generate `n` images of `prompt`; image j uses seed + j. Seeds and timings are always returned."""
    start = time.perf_counter()
    check_acceptable(request, body.n)
    engine = get_engine(request)
    model = model_name(request, engine, body.model)
    warnings = prompt_warnings(body.prompt, body.negative_prompt, model=model)
    seed = random_seed() if body.seed is None else body.seed
    job = GenerateRequest(
        model=model,
        prompt=body.prompt,
        seed=seed,
        n=body.n,
        steps=body.steps,
        guidance=body.guidance_scale,
        negative_prompt=body.negative_prompt,
        width=body.width,
        height=body.height,
        quality=body.quality,
    )
    result = await until_disconnected(request, engine.generate(job))
    timing_headers = {
        "X-Queue-Seconds": f"{result.queue_s:.6f}",
        "X-Compute-Seconds": f"{result.compute_s:.6f}",
        **routing_headers(request, result),
        **warning_headers(warnings),
    }
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
        routing=routing_info(result),
        warnings=warnings,
    )
    return JSONResponse(response.model_dump(), headers=timing_headers)


def model_card(pipeline: Pipeline, default: bool) -> ModelCard:
    """What /v1/models says about one loaded bundle."""
    m = pipeline.manifest
    return ModelCard(
        id=pipeline.name,
        created=export_time(m),
        default=default,
        resolution=m.resolution,
        steps=sorted(m.steps),
        default_steps=m.default_steps,
        guidance={
            "min": m.guidance.min,
            "max": m.guidance.max,
            "default": m.guidance.default,
            "network_input": m.guidance.network_input,
        },
        backend=pipeline.backend,
        evaluation=clean_rows(m.evaluation),
        provenance=provenance(m),
    )


async def models(request: Request) -> ModelList:
    """The loaded bundles: step counts, guidance range, resolution and their evaluation figures."""
    engine = get_engine(request)
    default = request.app.state.default_model
    return ModelList(data=[model_card(p, p.name == default) for p in engine.pipelines.values()])


async def info(request: Request) -> ServiceInfo:
    """The default model, the prompt vocabulary and example prompts: what a first request needs."""
    engine = getattr(request.app.state, "engine", None)
    return ServiceInfo(
        version=fewstep.__version__,
        default_model=request.app.state.default_model,
        models=list(engine.pipelines) if engine is not None else [],
        default_prompt=DEFAULT_PROMPT,
        example_prompts=list(shapes.EXAMPLE_PROMPTS),
        vocabulary=shapes.listed_vocabulary(request.app.state.default_model),
    )


async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 only after warm-up and before draining."""
    engine = getattr(request.app.state, "engine", None)
    if engine is None:
        return JSONResponse({"status": "not ready", "reason": "loading model bundles"}, status_code=503)
    if not engine.ready:
        return JSONResponse({"status": "not ready", "reason": engine.not_ready_reason()}, status_code=503)
    return JSONResponse({"status": "ready", "models": list(engine.pipelines)})


async def metrics(request: Request) -> Response:
    """Prometheus text exposition."""
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


async def playground() -> HTMLResponse:
    page = resources.files("service").joinpath("static/playground.html").read_text(encoding="utf-8")
    return HTMLResponse(page)


def build_router(keys: KeyChecker) -> APIRouter:
    """The native routes with `keys` guarding /generate and /v1/models (the handlers above hold no state)."""
    router = APIRouter()
    auth = [Depends(keys)]
    router.add_api_route(
        "/generate",
        generate,
        methods=["POST"],
        response_model=GenerateResponse,
        responses=GENERATE_RESPONSES,
        dependencies=[*auth, Depends(require_json)],
        tags=["generate"],
    )
    router.add_api_route(
        "/v1/models",
        models,
        methods=["GET"],
        response_model=ModelList,
        responses={401: ERRORS[401]},
        dependencies=auth,
        tags=["models"],
    )
    router.add_api_route("/info", info, methods=["GET"], response_model=ServiceInfo, tags=["models"])
    router.add_api_route("/healthz", healthz, methods=["GET"], tags=["probes"])
    router.add_api_route(
        "/readyz",
        readyz,
        methods=["GET"],
        tags=["probes"],
        responses={503: {"description": "loading, warming up or draining"}},
    )
    router.add_api_route("/metrics", metrics, methods=["GET"], tags=["probes"], response_class=Response)
    router.add_api_route("/", playground, methods=["GET"], include_in_schema=False, response_class=HTMLResponse)
    return router
