"""Bundle directory -> `Pipeline`: verify the manifest's hashes, then open the backend's sessions.

The text encoder always runs in ONNX Runtime (on the GPU's CUDA provider when the denoiser does);
the denoiser runs in the chosen backend, or, with `backend.kind = "auto"`, in the fastest allowed
candidate timed here (`service.backends.select`). Loading warms both at the batch sizes the service will
use, so that lazy allocations, kernel selection and TensorRT engine builds happen before
`/readyz`, never inside a request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from fewstep.bundle import STEP_SIZE_INPUT, Manifest, load_manifest
from service.backends.base import BackendError, BackendSettings, Denoiser
from service.pipeline import ImageJob, Pipeline
from service.text import BundleTokenizer, PromptEncoder
from service.tuning import TuningCache, bundle_identity

log = logging.getLogger(__name__)


def resolve_precision(manifest: Manifest, settings: BackendSettings) -> str:
    if settings.precision != "auto":
        return settings.precision
    return manifest.precision.get(settings.kind, "fp32")


def backend_label(settings: BackendSettings, chosen: str | None = None) -> str:
    """The `backend` label of metrics and /v1/models: the pinned kind, or 'auto:<path>' when chosen."""
    return f"auto:{chosen}" if chosen else settings.kind


def make_denoiser(bundle: Path, manifest: Manifest, settings: BackendSettings) -> Denoiser:
    spec = manifest.graphs["denoiser"]
    if settings.kind == "auto":
        return select_denoiser_for(bundle, manifest, settings)[0]
    precision = resolve_precision(manifest, settings)
    if settings.kind == "openvino":
        from service.backends.openvino import OpenVinoDenoiser

        return OpenVinoDenoiser(bundle / spec.file, spec, settings.model_copy(update={"precision": precision}))
    if settings.kind == "onnxruntime":
        from service.backends.onnxruntime import OrtDenoiser

        if precision != "fp32":
            raise BackendError(f"onnxruntime serves fp32 graphs here, not {precision} (try backend torch for bf16)")
        return OrtDenoiser(bundle / spec.file, spec, settings)
    if settings.kind == "torch":
        from service.backends.torch import TorchDenoiser

        return TorchDenoiser(bundle, spec, settings.model_copy(update={"precision": precision}))
    if settings.kind == "tensorrt":
        from service.backends.tensorrt import TensorRTDenoiser

        return TensorRTDenoiser(bundle / spec.file, spec, settings.model_copy(update={"precision": precision}))
    raise BackendError(f"backend.kind: unknown backend {settings.kind!r}")


def select_denoiser_for(bundle: Path, manifest: Manifest, settings: BackendSettings, tuning: TuningCache | None = None):
    """kind='auto': (denoiser, `Selection`) of the fastest allowed candidate on this machine."""
    from service.backends.select import select_denoiser

    return select_denoiser(
        manifest,
        settings,
        build=lambda pinned: make_denoiser(bundle, manifest, pinned),
        inputs=lambda b: denoiser_inputs(manifest, b),
        tuning=tuning,
    )


def load_prompt_encoder(
    bundle: Path, manifest: Manifest, settings: BackendSettings, shared: dict[tuple, PromptEncoder] | None = None
) -> PromptEncoder:
    """The bundle's tokenizer and text encoder session (ONNX Runtime; on the GPU's CUDA provider
    when the denoiser runs there, else, or if that fails, on the CPU).

    With `shared`, bundles whose text encoder graph and tokenizer files have the same sha256 (and
    the same token length) get one `PromptEncoder`: a teacher and its students share the 90 MB
    session, about 120 MB of resident memory per extra bundle, and one prompt cache."""
    spec = manifest.graphs["text_encoder"]
    tokenizer_file = manifest.text.tokenizer_files[0]
    key = (
        manifest.files[spec.file],
        manifest.files[tokenizer_file],
        manifest.text.max_tokens,
        settings.model_dump_json(),
    )
    if shared is not None and key in shared:
        log.info("%s shares the text encoder already loaded (sha256 %s)", manifest.name, key[0][:12])
        return shared[key]
    from service.backends.onnxruntime import OrtTextEncoder

    text_settings = settings.model_copy(update={"kind": "onnxruntime", "precision": "fp32"})
    try:
        text = OrtTextEncoder(bundle / spec.file, spec, text_settings)
    except BackendError:
        if settings.device == "cpu":
            raise
        text = OrtTextEncoder(bundle / spec.file, spec, text_settings.model_copy(update={"device": "cpu"}))
    encoder = PromptEncoder(BundleTokenizer(bundle / tokenizer_file, manifest.text.max_tokens), text)
    if shared is not None:
        shared[key] = encoder
    return encoder


def load_pipeline(
    bundle_dir: str | Path,
    settings: BackendSettings | None = None,
    warmup: Sequence[int] = (1,),
    shared_text: dict[tuple, PromptEncoder] | None = None,
    tuning: TuningCache | None = None,
) -> Pipeline:
    """Load a bundle for serving. Raises `fewstep.bundle.BundleError` naming a bad or missing file,
    `BackendError` if the backend cannot run here. `warmup` lists image batch sizes to run once;
    `shared_text` (one dict across the bundles of a process) shares identical text encoders;
    `tuning` keeps `kind=auto`'s timings per machine (`service.tuning`)."""
    settings = settings or BackendSettings()
    bundle = Path(bundle_dir)
    t0 = time.perf_counter()
    manifest = load_manifest(bundle)
    prompts = load_prompt_encoder(bundle, manifest, settings, shared_text)
    if settings.kind == "auto":
        denoiser, selection = select_denoiser_for(bundle, manifest, settings, tuning)
        label = backend_label(settings, selection.chosen.label)
        path = selection.chosen.label
    else:
        denoiser, label = make_denoiser(bundle, manifest, settings), backend_label(settings)
        path = f"{settings.kind}-{resolve_precision(manifest, settings)}"
    identity = {
        "bundle": bundle_identity(manifest.files),
        "path": path,
        "backend": settings.model_dump(mode="json", include={"device", "threads", "max_batch", "compile"}),
    }
    pipeline = Pipeline(manifest, prompts, denoiser, label, identity)
    for b in warmup:
        jobs = [ImageJob("warm-up", i, manifest.default_steps, manifest.guidance.default) for i in range(b)]
        pipeline.generate(jobs[:1])  # the text encoder and the first kernels
        pipeline.sample(jobs, min(manifest.steps))
    log.info("loaded %s from %s (%s, %.1f s)", manifest.name, bundle, label, time.perf_counter() - t0)
    return pipeline


def denoiser_inputs(manifest: Manifest, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Random inputs of the denoiser's declared shapes (parity checks and benchmarks)."""
    rng = np.random.default_rng(seed)
    out = []
    for spec in manifest.graphs["denoiser"].inputs:
        shape = tuple(batch if d == "batch" else int(d) for d in spec.shape)
        if spec.name == "text_mask":
            lengths = rng.integers(2, shape[1] + 1, batch)
            out.append((np.arange(shape[1])[None] < lengths[:, None]).astype(np.int64))
        elif spec.name == "t":
            out.append(rng.random(shape, dtype=np.float32))
        elif spec.name == "w":
            out.append((1 + 4 * rng.random(shape)).astype(np.float32))
        elif spec.name == STEP_SIZE_INPUT:  # a shortcut student: d = 1/K of a K the bundle serves
            out.append((1.0 / rng.choice(sorted(manifest.steps), shape)).astype(np.float32))
        else:
            out.append(rng.standard_normal(shape, dtype=np.float32))
    return out
