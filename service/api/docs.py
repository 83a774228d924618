"""/docs (Swagger UI) and /redoc (ReDoc) with their assets served by the service itself.

FastAPI's default pages load Swagger UI and ReDoc from a public CDN, so wherever the service
cannot reach it (an air-gapped cluster, a locked-down laptop) /docs is a blank page. The assets
here come from the pinned `fastapi-offline` package, which ships the minified Swagger UI and ReDoc
bundles (and nothing else we use): the pages work with no network at all. A Content-Security-Policy
keeps them from reaching anywhere else (ReDoc's sidebar would fetch its vendor's logo from a CDN;
blocked, the logo just does not show), so opening the docs never leaves the service.
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

log = logging.getLogger(__name__)

# What the docs pages may load: only this service (inline styles and Swagger UI's inline start-up
# script included; ReDoc runs its search in a worker made from a blob).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; connect-src 'self'"
)

ASSETS_URL = "/static/docs"
ASSETS_PACKAGE = "fastapi_offline"
# The keyword of FastAPI's page builders -> the packaged file it points at.
ASSETS = {
    "swagger_js_url": "swagger-ui-bundle.js",
    "swagger_css_url": "swagger-ui.css",
    "swagger_favicon_url": "favicon.png",
    "redoc_js_url": "redoc.standalone.js",
    "redoc_favicon_url": "favicon.png",
}


def assets_dir() -> Path | None:
    """The packaged asset folder, or None if the package is missing or lacks a file (then: CDN pages)."""
    try:
        folder = Path(str(resources.files(ASSETS_PACKAGE).joinpath("static")))
    except ModuleNotFoundError:
        return None
    return folder if all((folder / name).is_file() for name in ASSETS.values()) else None


def install(app: FastAPI) -> None:
    """Add /docs, its OAuth2 redirect page, /redoc and the asset route to an app built with
    `docs_url=None, redoc_url=None`."""
    folder = assets_dir()
    if folder is None:
        log.warning(
            "the %s package is missing: /docs and /redoc load their scripts from a public CDN "
            "(pip install fastapi-offline for docs that work offline)",
            ASSETS_PACKAGE,
        )
    else:
        app.mount(ASSETS_URL, StaticFiles(directory=folder), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"
    redirect_url = app.swagger_ui_oauth2_redirect_url or "/docs/oauth2-redirect"

    def confined(page: HTMLResponse) -> HTMLResponse:
        if folder is not None:  # with the CDN fallback, the page must reach the CDN
            page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
        return page

    def assets(request: Request, *roles: str) -> dict[str, str]:
        """The asset keywords for FastAPI's page builder (none without the package: its CDN defaults)."""
        root = request.scope.get("root_path", "")
        return {} if folder is None else {role: f"{root}{ASSETS_URL}/{ASSETS[role]}" for role in roles}

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - API docs",
            oauth2_redirect_url=f"{root}{redirect_url}",
            swagger_ui_parameters=app.swagger_ui_parameters,
            **assets(request, "swagger_js_url", "swagger_css_url", "swagger_favicon_url"),
        )
        return confined(page)

    @app.get(redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        page = get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            with_google_fonts=folder is None,
            **assets(request, "redoc_js_url", "redoc_favicon_url"),
        )
        return confined(page)
