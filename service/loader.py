"""Bundle directory -> `Pipeline`: verify the manifest's hashes, then open the backend's sessions."""

from __future__ import annotations

from pathlib import Path

from fewstep.bundle import load_manifest
from service.backends.base import BackendSettings
from service.pipeline import Pipeline


def load_pipeline(bundle_dir: str | Path, settings: BackendSettings | None = None) -> Pipeline:
    """Load a bundle for serving. Raises `fewstep.bundle.BundleError` naming a bad or missing file,
    `service.backends.base.BackendError` if the backend cannot run here."""
    settings = settings or BackendSettings()
    manifest = load_manifest(bundle_dir)
    raise NotImplementedError(f"backend {settings.kind} for {manifest.name}: landing with the export issue")
