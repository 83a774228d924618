"""The app factory. Until the service issue lands it serves liveness and an honest readiness.

`/readyz` answers 503 because no bundles can be loaded yet; nothing here pretends to generate.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.responses import JSONResponse

import fewstep


def create_app() -> FastAPI:
    app = FastAPI(title="fewstep", version=fewstep.__version__)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    def readyz() -> JSONResponse:
        return JSONResponse({"status": "not ready", "reason": "no model bundles are loaded"}, status_code=503)

    return app
