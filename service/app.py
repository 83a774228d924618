"""The app factory and its lifespan: settings in, a FastAPI app out; nothing happens at import.

`create_app(settings)` builds the routes and the metrics registry. The lifespan then loads the
bundles (`service.loader.load_pipeline`, verifying their hashes; a bad bundle stops start-up with a
message naming it), starts the engine, and warms every model in the background: /healthz answers
at once, /readyz turns 200 when warm-up is done, and one log line then says where the playground,
the API docs and the metrics are. On shutdown the engine drains what it accepted.

Tests pass `pipelines=` (fake backends) to skip loading; everything else is the production path.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

import fewstep
from fewstep.bundle import MANIFEST
from service.api import docs, errors, routes
from service.api import openai as openai_routes
from service.api.auth import KeyChecker
from service.api.middleware import ServiceMiddleware
from service.engine import Engine, EngineConfig
from service.engine.slo import SloConfig
from service.metrics import Metrics
from service.pipeline import Pipeline
from service.settings import ServiceSettings, SettingsError
from service.tuning import TuningCache

log = logging.getLogger(__name__)


def discover_bundles(paths: Sequence[Path]) -> list[Path]:
    """Each path is a bundle (has manifest.json) or a folder of bundles; SettingsError if none is found."""
    found: list[Path] = []
    for path in paths:
        if (path / MANIFEST).is_file():
            found.append(path)
        elif path.is_dir():
            found.extend(sorted(p for p in path.iterdir() if (p / MANIFEST).is_file()))
        else:
            raise SettingsError(f"FEWSTEP_BUNDLES: {path} does not exist (build bundles with `make bundles`)")
    if not found:
        where = ", ".join(str(p) for p in paths) or "(empty list)"
        raise SettingsError(f"FEWSTEP_BUNDLES: no bundle ({MANIFEST}) in {where} (build them with `make bundles`)")
    return found


def load_pipelines(settings: ServiceSettings, tuning: TuningCache | None = None) -> list[Pipeline]:
    """Load every configured bundle with the configured backend (blocking; run off the event loop);
    `tuning` keeps `kind=auto`'s timings per machine."""
    from service.loader import load_pipeline

    pipelines = []
    shared_text: dict = {}  # bundles with identical text encoders share one session and prompt cache
    for path in discover_bundles(settings.bundles):
        log.info("loading bundle %s (%s, %s)", path, settings.backend.kind, settings.backend.device)
        try:
            pipeline = load_pipeline(path, settings.backend, shared_text=shared_text, tuning=tuning)
        except Exception as e:
            log.error("cannot load bundle %s: %s", path, e)
            raise
        stamp_export_time(pipeline, path / MANIFEST)
        pipelines.append(pipeline)
    return pipelines


def tuning_cache(settings: ServiceSettings) -> TuningCache | None:
    """The configured tuning cache (`FEWSTEP_TUNING_CACHE`), or None."""
    if settings.tuning_cache is None:
        return None
    return TuningCache(settings.tuning_cache, refresh=settings.tuning_refresh)


def stamp_export_time(pipeline: Pipeline, manifest_file: Path) -> None:
    """Bundles exported before the manifest recorded `exported_at`: the manifest file's modification
    time is their export time (the export writes it last and moves the bundle into place whole)."""
    if pipeline.manifest.exported_at is None:
        when = datetime.fromtimestamp(manifest_file.stat().st_mtime, UTC)
        pipeline.manifest = pipeline.manifest.model_copy(update={"exported_at": when})


def public_url(settings: ServiceSettings, path: str = "/") -> str:
    """The address a person on this machine opens (a wildcard bind is reached through localhost)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(settings.host, settings.host)
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{settings.port}{path}"


def ready_line(settings: ServiceSettings, default_model: str) -> str:
    """The one line that says the service is ready and where to go."""
    return (
        f"ready (default model {default_model}): playground {public_url(settings, '/')} | "
        f"API docs {public_url(settings, '/docs')} | metrics {public_url(settings, '/metrics')}"
    )


def engine_config(settings: ServiceSettings) -> EngineConfig:
    """Batch bounds left unset come from the warm-up cost profile (the constants are the fallback
    without warm-up, and the bounds in force until the profile is done)."""
    fallback = EngineConfig()
    return EngineConfig(
        max_batch_images=settings.max_batch_images or fallback.max_batch_images,
        max_wait_s=fallback.max_wait_s if settings.max_wait_s is None else settings.max_wait_s,
        queue_limit_images=settings.queue_limit_images,
        request_timeout_s=settings.request_timeout_s,
        profile_max_batch=settings.max_batch_images is None,
        profile_max_wait=settings.max_wait_s is None,
        wait_rule=settings.batch_wait_rule,
        profile_budget_s=settings.batch_profile_budget_s,
        tuned_profile_budget_s=settings.tuning_profile_budget_s,
        scheduling=settings.scheduling,
        slo=slo_config(settings),
    )


def slo_config(settings: ServiceSettings) -> SloConfig:
    """The controller's settings (`FEWSTEP_SLO__*`) in the engine's terms (seconds)."""
    s = settings.slo
    return SloConfig(
        objective_s=None if s.p99_ms is None else s.p99_ms / 1000,
        headroom=s.headroom,
        pressure_start=s.pressure_start,
        recovery_half_life_s=s.recovery_s,
        shed=s.shed,
        default_hint=s.quality,
    )


DESCRIPTION = (
    "Few-step text-to-image generation with dynamic batching. The playground is at `/`, the models at "
    "`GET /v1/models`, and what a prompt may say at `GET /info`.\n\n"
    "Prompts use the shapes-world vocabulary the models were trained on; a word outside it is not "
    "refused, but the model draws noise for it, and the reply names it (`warnings`, `X-Fewstep-Warning`).\n\n"
    "Errors are JSON in OpenAI's shape on every route. The OpenAI-compatible route "
    "`POST /v1/images/generations` answers as OpenAI's API does (400 for any invalid parameter)."
)


def create_app(settings: ServiceSettings | None = None, pipelines: Sequence[Pipeline] | None = None) -> FastAPI:
    """The service. `pipelines` replaces loading `settings.bundles` (tests inject fakes this way)."""
    settings = settings or ServiceSettings()
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        tuning = tuning_cache(settings)  # one per start: the backend choice and the batch profile share it
        if pipelines is not None:
            loaded = list(pipelines)
        else:
            loaded = await asyncio.to_thread(load_pipelines, settings, tuning)
        engine = Engine(loaded, engine_config(settings), metrics, tuning=tuning)
        default = settings.default_model or next(iter(engine.pipelines))
        if default not in engine.pipelines:
            raise SettingsError(
                f"FEWSTEP_DEFAULT_MODEL: {default!r} is not among the loaded {sorted(engine.pipelines)}"
            )
        app.state.default_model = default
        await engine.start()
        app.state.engine = engine

        async def warm_up() -> None:
            await engine.warm_up(settings.warmup)
            if engine.ready:
                log.info(ready_line(settings, default))

        warm = asyncio.create_task(warm_up(), name="fewstep-warm-up")
        try:
            yield
        finally:
            if not warm.done():
                warm.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await warm
            await engine.stop(settings.drain_timeout_s)
            app.state.engine = None

    app = FastAPI(
        title="fewstep",
        version=fewstep.__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # served by service.api.docs, with the Swagger UI and ReDoc assets on board
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.engine = None
    app.state.default_model = settings.default_model
    keys = KeyChecker([k.get_secret_value() for k in settings.api_keys])
    errors.install(app, metrics)
    app.include_router(routes.build_router(keys))
    app.include_router(openai_routes.build_router(keys))
    docs.install(app)
    app.add_middleware(
        ServiceMiddleware,
        metrics=metrics,
        max_body_bytes=settings.max_body_bytes,
        body_timeout_s=settings.body_timeout_s,
    )
    add_cors(app, settings.cors_origins)
    return app


# What a browser page on another origin may send: the API's methods, a JSON body and a key. The
# headers it may read are the ones the routes set for clients (timings, routing, warnings).
CORS_METHODS = ("GET", "POST")
CORS_REQUEST_HEADERS = ("Authorization", "X-API-Key", "Content-Type", "Accept")
CORS_EXPOSED_HEADERS = (
    "Retry-After",
    "X-Seed",
    "X-Queue-Seconds",
    "X-Compute-Seconds",
    "X-Total-Seconds",
    "X-Fewstep-Warning",
    "X-Fewstep-Quality",
    "X-Fewstep-Asked-Model",
    "X-Fewstep-Asked-Steps",
    "X-Fewstep-Model",
    "X-Fewstep-Steps",
    "X-Fewstep-Route-Reason",
    "X-Fewstep-Predicted-Seconds",
    "X-Fewstep-Objective-Seconds",
)


def add_cors(app: FastAPI, origins: Sequence[str]) -> None:
    """Starlette's CORS middleware for `FEWSTEP_CORS_ORIGINS`; nothing when it is empty, so by
    default a browser lets only pages of the service's own origin (the playground) call it.

    Added last, so it is the outermost layer: a preflight (OPTIONS) is answered before the body
    limits, the metrics and the routes see it, and a refusal carries no CORS headers at all.
    Credentials (cookies) are not allowed: keys travel in headers, which a page must add itself."""
    if not origins:
        return
    app.add_middleware(
        CORSMiddleware,
        allow_origins=list(origins),
        allow_methods=list(CORS_METHODS),
        allow_headers=list(CORS_REQUEST_HEADERS),
        expose_headers=list(CORS_EXPOSED_HEADERS),
        allow_credentials=False,
        max_age=600,
    )
