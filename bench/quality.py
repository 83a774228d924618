"""`fewstep bench quality`: the evaluator's figures for one backend and precision, seeds fixed.

Images come from the serving path (`service.loader.load_pipeline`, `Pipeline.generate`) on the
evaluation set of `distill.evaluation.evaluate` (same prompts, same per-item seeds), so a reduced-precision
row stands beside the fp32 row with identical noise and only the arithmetic differs. ONNX Runtime
paths the service does not serve yet (int8, fp16 graphs, `bench.paths`) are loaded as fp32 and
their denoiser swapped in.

The row has the schema of `distill.evaluation.evaluate` rows plus `backend` and `compute_precision` (the
arithmetic: fp32, bf16, int8; `precision` stays the evaluator's precision-recall figure), and two noise
yardsticks to judge a difference by: `fd_bootstrap_sd` (FD over items resampled with
replacement, generated and reference features together) and `adherence_se` (binomial standard
error of the overall adherence). When the images of the reference path (fp32 on the same
backend, or `onnxruntime-fp32`) are in `images_dir`, `vs_reference` adds the paired comparison:
pixel differences, FD and adherence deltas, and the share of prompts judged the same way.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

BOOTSTRAP = 50


def row_name(bundle: Path, backend: str, precision: str, steps: int, guidance: float, compile: bool = False) -> str:
    return f"{bundle.name}-{backend}{'-compile' if compile else ''}-{precision}-{steps}-w{guidance:g}"


def load_bench_pipeline(bundle: Path, backend: str, precision: str, compile: bool = False):
    """The service's pipeline for this backend/precision (fp32 ONNX Runtime with the derived graph
    swapped in for ONNX Runtime precisions the service does not serve)."""
    from bench.paths import find_path, make_path_denoiser
    from service.backends.base import BackendSettings
    from service.loader import load_pipeline

    path = find_path(backend, precision, compile)
    native = path.precision if path.native else "fp32"
    settings = BackendSettings(kind=backend, precision=native, compile=compile)
    pipeline = load_pipeline(bundle, settings, warmup=())
    if not path.native:
        pipeline.denoiser = make_path_denoiser(path, bundle, pipeline.manifest, prompts=pipeline.prompts)
    return pipeline


def fd_bootstrap_sd(gen: np.ndarray, ref: np.ndarray, n: int = BOOTSTRAP, seed: int = 0) -> float:
    from distill.evaluation.metrics import frechet_distance

    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        idx = rng.integers(0, len(gen), len(gen))
        vals.append(frechet_distance(ref[idx], gen[idx]))
    return float(np.std(vals, ddof=1))


def verdicts(evaluator, images: np.ndarray, items) -> np.ndarray:
    import shapesworld as shapes
    from distill.evaluation.evaluator import predict

    pred, _ = predict(evaluator, images)
    return np.array([shapes.satisfies(p, e.spec)["all"] for p, e in zip(pred, items, strict=True)])


@dataclass(frozen=True)
class QualityBenchConfig:
    """One quality row: the bundle, the path (backend, arithmetic, compile), the evaluation set's
    size and sampler settings, and where the row, the images and the evaluator are."""

    bundle: str | Path
    backend: str
    precision: str  # the arithmetic: fp32, bf16, fp16, int8
    n_images: int = 500
    steps: int = 16
    guidance: float = 3.0
    compile: bool = False
    out_dir: str | Path = "results/bench/quality"
    images_dir: str | Path = "runs/bench/quality"
    evaluator_path: str | Path = "models/evaluator"
    batch_size: int = 64  # images per `generate()` call
    reference: str | None = None  # the row to compare with (default: `_reference_name`'s)


def quality_row(cfg: QualityBenchConfig) -> dict[str, Any]:
    """Generate the evaluation set through the service pipeline, score it, write `<name>.json`."""
    from distill.evaluation.evaluate import (
        EVAL_SEED,
        EVAL_SET_VERSION,
        eval_set,
        git_sha,
        machine,
        measure,
        reference_images,
        sha256_file,
    )
    from distill.evaluation.evaluator import load_evaluator
    from service.pipeline import ImageJob

    bundle, backend, precision, compile = Path(cfg.bundle), cfg.backend, cfg.precision, cfg.compile
    steps, guidance, batch_size, images_dir = cfg.steps, cfg.guidance, cfg.batch_size, Path(cfg.images_dir)
    evaluator_path = cfg.evaluator_path
    evaluator, ev_manifest = load_evaluator(evaluator_path)
    pipeline = load_bench_pipeline(bundle, backend, precision, compile)
    m = pipeline.manifest
    items = eval_set(cfg.n_images)
    jobs = [ImageJob(e.item.caption, e.seed, steps, guidance) for e in items]
    pipeline.generate(jobs[: min(batch_size, len(jobs))])  # warm-up (torch.compile), not timed
    t0 = time.perf_counter()
    images = np.concatenate([pipeline.generate(jobs[i : i + batch_size]) for i in range(0, len(jobs), batch_size)])
    seconds = time.perf_counter() - t0
    ref = reference_images(items, m.resolution)
    nfe_per_step = 1 if m.guidance.network_input or guidance == 1.0 else 2
    name = row_name(bundle, backend, precision, steps, guidance, compile)
    meta = {
        "name": name, "model": str(bundle), "sampler": m.sampler, "steps": steps, "guidance": guidance,
        "n_images": len(items), "eval_seed": EVAL_SEED, "eval_set_version": EVAL_SET_VERSION,
        "resolution": m.resolution, "evaluator_sha256": sha256_file(Path(evaluator_path) / "weights.safetensors"),
        "backend": backend, "compute_precision": precision,
    }  # fmt: skip
    # figures with their 95% bootstrap intervals, and the per-image record that `fewstep eval
    # compare` pairs with another path's (same prompts and seeds: paired intervals of the difference)
    scores, per_image = measure(evaluator, images, ref, items, meta=meta)
    gen_feats, ref_feats = per_image.features, per_image.ref_features
    p = scores["adherence"]["overall"]
    n_ind = sum(not e.held_out for e in items)
    row: dict[str, Any] = {
        "name": name,
        "model": str(bundle),
        "sampler": m.sampler,
        "steps": steps,
        "guidance": guidance,
        "nfe": steps * nfe_per_step,
        "nfe_per_step": nfe_per_step,
        "n_images": len(items),
        **scores,
        "seconds_per_image": seconds / len(items),
        "evaluator_accuracy": ev_manifest["accuracy"],
        "eval_seed": EVAL_SEED,
        "machine": machine(),
        "git_sha": git_sha(),
        "backend": backend,
        "compute_precision": precision,  # "precision" is the evaluator's precision (with recall)
        "compile": compile,
        "batch_size": batch_size,
        "fd_bootstrap_sd": fd_bootstrap_sd(gen_feats, ref_feats),
        "adherence_se": float(np.sqrt(p * (1 - p) / max(n_ind, 1))) if p is not None else None,
        "per_image": f"{name}.npz",
    }
    images_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(images_dir / f"{name}.npz", images=images)
    ref_name = cfg.reference or _reference_name(bundle, backend, precision, steps, guidance, compile)
    ref_file = images_dir / f"{ref_name}.npz"
    ref_row_file = Path(cfg.out_dir) / f"{ref_name}.json"
    if ref_name != name and ref_file.is_file() and ref_row_file.is_file():
        other = np.load(ref_file)["images"]
        if other.shape == images.shape:
            ref_row = json.loads(ref_row_file.read_text())
            diff = np.abs(images.astype(np.int16) - other.astype(np.int16))
            ind = np.array([not e.held_out for e in items])
            v_self, v_ref = verdicts(evaluator, images, items), verdicts(evaluator, other, items)
            row["vs_reference"] = {
                "reference": ref_name,
                "mean_abs_255": float(diff.mean()),
                "max_abs_255": int(diff.max()),
                "identical_images": float(np.mean(diff.reshape(len(items), -1).max(1) == 0)),
                "fd_delta": row["fd"] - ref_row["fd"],
                "adherence_delta": p - ref_row["adherence"]["overall"],
                "same_verdict_share": float(np.mean(v_self[ind] == v_ref[ind])),
            }
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    per_image.save(out_dir / f"{name}.npz")
    (out_dir / f"{name}.json").write_text(json.dumps(row, indent=2) + "\n")
    return row


def _reference_name(bundle: Path, backend: str, precision: str, steps: int, guidance: float, compile: bool) -> str:
    """fp32 on the same backend (eager), or ONNX Runtime fp32 for an fp32 row."""
    if precision != "fp32":
        return row_name(bundle, backend, "fp32", steps, guidance)
    return row_name(bundle, "onnxruntime", "fp32", steps, guidance)
