"""`fewstep eval`: sample a model on a fixed prompt set and score it with the frozen evaluator.

The prompt set, the image seeds and the reference renders are fixed by `EVAL_SEED` and
`EVAL_SET_VERSION` (`distill.evaluation.eval_set`), so every results row is comparable.

Scores (`shapes-world.md`, "Evaluation on this world"):
- adherence: the share of images whose predicted scene satisfies everything the prompt says,
  over the in-distribution prompts (`overall`, `one_object`, `two_objects`), over the held-out
  compositions (`held_out`) and phrasings, and per attribute over the prompts that state it;
- FD and KID of evaluator features against renders of the prompts' own scenes; precision and
  recall on the same features; the total variation distance of free attributes (background,
  size, position where the prompt leaves them free) between generated and reference scenes;
- grain: high-frequency energy on the background the predicted scene leaves free, for the
  generated images and (the floor) for the renders.

FD, KID, grain and every adherence figure carry a 95% bootstrap interval over images beside them
(`fd_ci`, `kid_ci`, `grain_ci`, `adherence_ci` mirroring `adherence`; `distill.evaluation.bootstrap`). A
row also records the training cost of the model it scores (`training`) and names its per-image
sidecar (`per_image`, `<name>.npz`), from which `fewstep eval compare` pairs two rows.
"""

from __future__ import annotations

import json
import logging
import platform
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

import shapesworld as shapes
from distill.evaluation.bootstrap import BOOTSTRAP_SEED, RESAMPLES
from distill.evaluation.eval_set import EVAL_SEED, EVAL_SET_VERSION, EvalItem, eval_set
from distill.evaluation.evaluator import load_evaluator, predict
from distill.evaluation.metrics import (
    frechet_distance,
    frechet_distance_extrapolated,
    kernel_inception_distance,
    precision_recall,
    total_variation,
)
from distill.evaluation.per_image import PerImage, adherence_shares, check_matrix, prompt_fields
from distill.kit.checkpoint import load_denoiser, student_info, weights_file
from distill.kit.data import to_uint8
from distill.kit.grid import save_grid
from distill.kit.guidance import GuidedDenoiser, encode_cond, nfe_per_step
from distill.kit.text import TextEncoder
from fewstep.bundle import sha256_file
from fewstep.provenance import git_revision
from fewstep.rng import SeededNoise
from fewstep.sampler import SAMPLERS

log = logging.getLogger(__name__)

SAMPLER_NAMES = ("ancestral", "ddim", "dpmpp-2m", "unipc")
GRID_IMAGES = 32


def reference_images(items: list[EvalItem], resolution: int) -> np.ndarray:
    return np.stack([shapes.render(e.item.scene, e.item.placements, resolution) for e in items])


def generate(
    model: torch.nn.Module,
    encoder: TextEncoder,
    items: list[EvalItem],
    sampler: str,
    steps: int,
    guidance: float,
    batch_size: int = 250,
    progress: bool = True,
) -> tuple[np.ndarray, int]:
    """Generate one image per item (its own seed); returns uint8 images and network evaluations."""
    cfg = model.cfg
    shape = (cfg.in_channels, cfg.resolution, cfg.resolution)
    device = next(model.parameters()).device
    like = torch.zeros(1, device=device)
    denoise = GuidedDenoiser(model, steps)  # steps: a shortcut student runs at d = 1/steps
    out = []
    for i in tqdm(range(0, len(items), batch_size), disable=not progress, desc=f"{sampler} {steps} steps"):
        chunk = items[i : i + batch_size]
        cond = encode_cond(encoder, [e.item.caption for e in chunk])
        noise = SeededNoise([e.seed for e in chunk], shape)
        with torch.inference_mode():
            if sampler in SAMPLERS:
                x = SAMPLERS[sampler](denoise, steps, cond, guidance, noise, like)
            else:
                from distill.evaluation.solvers import diffusers_sample

                x = diffusers_sample(denoise, sampler, steps, cond, guidance, noise, like)
        out.append(to_uint8(x))
    return np.concatenate(out), denoise.evaluations


def adherence(pred: list[shapes.Scene], items: list[EvalItem]) -> dict[str, Any]:
    """Adherence shares over the prompt set's groups (`distill.evaluation.per_image.adherence_groups`: the one
    definition the figures, their intervals and paired comparisons all use)."""
    return adherence_shares(prompt_fields(items), check_matrix(pred, items))


def free_attribute_tv(pred: list[shapes.Scene], items: list[EvalItem]) -> dict[str, float | None]:
    """TV distance between generated and reference distributions of attributes the prompt leaves free.

    Background over all prompts that do not name it; size and position over one-object prompts
    whose generated image shows exactly one object, where the prompt leaves them free.
    """
    out: dict[str, float | None] = {}
    bg_idx = [i for i, e in enumerate(items) if e.spec.background is None]
    if bg_idx:
        ref = Counter(items[i].item.scene.background for i in bg_idx)
        gen = Counter(pred[i].background for i in bg_idx)
        out["background"] = _tv(gen, ref)
    for attr, key in (("size", "size"), ("position", "cell")):
        idx = [
            i
            for i, e in enumerate(items)
            if len(e.spec.objects) == 1 and getattr(e.spec.objects[0], key) is None and len(pred[i].objects) == 1
        ]
        if idx:
            ref = Counter(str(getattr(items[i].item.scene.objects[0], key)) for i in idx)
            gen = Counter(str(getattr(pred[i].objects[0], key)) for i in idx)
            out[attr] = _tv(gen, ref)
    return out


def _tv(gen: Counter, ref: Counter) -> float:
    total = sum(ref.values())
    reference = {k: v / total for k, v in ref.items()}
    for k in gen:
        reference.setdefault(k, 0.0)
    return total_variation(dict(gen), reference)


def measure(
    evaluator,
    images: np.ndarray,
    ref: np.ndarray,
    items: list[EvalItem],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    meta: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], PerImage]:
    """The row's figures and the per-image measurements behind them (for the sidecar).

    With `resamples` > 0 the figures come with 95% bootstrap intervals over images (`fd_ci`,
    `kid_ci`, `adherence_ci` mirroring `adherence`, the grain and its interval); 0 skips them."""
    pred, feats = predict(evaluator, images)
    ref_pred, ref_feats = predict(evaluator, ref)
    rec = PerImage.build(items, pred, ref_pred, feats, ref_feats, images, ref, meta)
    # KID's cubic kernel (x.y / d + 1)^3 assumes features of order one (Inception pool features);
    # ours are unnormalised, so centre both sets on the reference mean and divide by the
    # reference's overall standard deviation (one scalar: per-dimension scaling would blow up
    # near-constant dimensions), or a few huge kernel values dominate the estimate.
    kid, kid_std = kernel_inception_distance(*rec.kid_features())
    precision, recall = precision_recall(ref_feats, feats)
    out: dict[str, Any] = {
        "fd": frechet_distance(ref_feats, feats),
        # FD drifts with the number of images (its bias is ~ k / N); this one does not (metrics).
        **_fd_infinity(ref_feats, feats),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "adherence": rec.adherence(),
        "free_attribute_tv": free_attribute_tv(pred, items),
    }
    if resamples > 0:
        t0 = time.perf_counter()
        out.update(rec.intervals(resamples, seed))
        log.info("bootstrap intervals (%d resamples of %d images): %.1f s", resamples, rec.n, time.perf_counter() - t0)
    return out, rec


def _fd_infinity(ref_feats: np.ndarray, feats: np.ndarray) -> dict[str, Any]:
    """{"fd_infinity", "fd_infinity_fit"} (`metrics.frechet_distance_extrapolated`), or None for a
    row too small to extrapolate from (a smoke test's few images)."""
    try:
        fit = frechet_distance_extrapolated(ref_feats, feats)
    except ValueError:
        return {"fd_infinity": None, "fd_infinity_fit": None}
    return {"fd_infinity": fit.pop("fd_infinity"), "fd_infinity_fit": fit}


def score(
    evaluator,
    images: np.ndarray,
    ref: np.ndarray,
    items: list[EvalItem],
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:
    """The row's figures (`measure` without the per-image record)."""
    return measure(evaluator, images, ref, items, resamples, seed)[0]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads{gpu}"


def git_sha() -> str:
    """The commit the row was measured at, `-dirty` with uncommitted changes (`fewstep.provenance`)."""
    return git_revision()


def identity(model_path: str | Path, evaluator_path: str | Path) -> dict[str, str]:
    """The sha256 of the weights a row scores and of the evaluator that scored it: with the settings,
    what makes two rows the same measurement (`reusable`)."""
    return {
        "model_sha256": sha256_file(weights_file(model_path)[0]),
        "evaluator_sha256": sha256_file(Path(evaluator_path) / "weights.safetensors"),
    }


def reusable(
    row_file: Path,
    model_path: str | Path,
    sampler: str,
    steps: int,
    guidance: float,
    n_images: int,
    evaluator_path: str | Path = "models/evaluator",
    need_per_image: bool = False,
) -> dict[str, Any] | None:
    """The row already written at `row_file` if it measured exactly this (same weights, evaluator,
    sampler, steps, guidance, image count, eval seed and prompt set), else None: lets long tables
    skip the rows whose inputs have not changed (the teacher's many-step rows cost minutes each on a
    CPU). With `need_per_image`, a row is reused only if its per-image sidecar is there too (a
    paired comparison needs it)."""
    if not row_file.is_file():
        return None
    row = json.loads(row_file.read_text())
    if need_per_image and not (row.get("per_image") and (row_file.parent / row["per_image"]).is_file()):
        return None
    want = {
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "n_images": n_images,
        "eval_seed": EVAL_SEED,
        "eval_set_version": EVAL_SET_VERSION,
        **identity(model_path, evaluator_path),
    }
    return row if all(row.get(k) == v for k, v in want.items()) else None


def training_record(model_path: str | Path) -> dict[str, Any] | None:
    """What it cost to train the model a row scores, when its directory says: updates, training
    image passes (forward; backward where known) and wall time. None when nothing is recorded.

    Students (`fewstep distill`) carry it in the `student.training` block of their config.json
    (forward passes count every network, the teacher's included); packed teachers in the
    `training` block `fewstep pack` copies from the run's summary.json, and a run directory in its
    summary.json (one forward and one backward pass per training image: steps x batch x ranks)."""
    path = Path(model_path)
    info = student_info(path)
    if info is not None and info.get("training"):
        t = info["training"]
        return {
            "updates": t.get("iters"),
            "image_passes": t.get("network_forward_images"),
            "backward_image_passes": t.get("network_backward_images"),
            "wall_s": t.get("wall_s"),
            "device": t.get("device"),
        }
    packed = path / "config.json"  # a run directory has a config.json too, without a training block
    summary: dict[str, Any] | None = json.loads(packed.read_text()).get("training") if packed.is_file() else None
    if not summary and (path / "summary.json").is_file():
        summary = json.loads((path / "summary.json").read_text())
    if not summary:
        return None
    if "iters" in summary:  # a distillation run's own summary.json
        return {
            "updates": summary["iters"],
            "image_passes": summary.get("network_forward_images"),
            "backward_image_passes": summary.get("network_backward_images"),
            "wall_s": summary.get("wall_s"),
            "device": summary.get("device"),
        }
    steps = summary.get("steps")
    try:
        batch = int(weights_file(path)[1].batch_size)
    except (FileNotFoundError, KeyError, ValueError):
        batch = None
    passes = steps * batch * int(summary.get("world_size", 1)) if steps is not None and batch else None
    return {
        "updates": steps,
        "image_passes": passes,
        "backward_image_passes": passes,
        "wall_s": summary.get("wall_s"),
        "device": None,
    }


def ceiling_name(model_path: str | Path, sampler: str, steps: int, guidance: float, n_images: int) -> str:
    """A row name that keeps every setting a ceiling depends on apart: `teacher-ancestral-64-w3-n2000`."""
    return f"{Path(model_path).name}-{sampler}-{steps}-w{guidance:g}-n{n_images}"


def evaluate_once(
    model_path: str | Path,
    sampler: str,
    steps: int,
    guidance: float,
    n_images: int,
    out_dir: str | Path,
    evaluator_path: str | Path = "models/evaluator",
    progress: bool = True,
    reuse: bool = True,
) -> dict[str, Any]:
    """`evaluate` under a name that carries every setting (`ceiling_name`), reusing the row already
    there if it measured the same weights, evaluator, settings and prompt set (`reusable`) and has
    its per-image sidecar: many-step rows are computed once and then shared by every comparison."""
    out_dir = Path(out_dir)
    name = ceiling_name(model_path, sampler, steps, guidance, n_images)
    args = (model_path, sampler, steps, guidance, n_images)
    row = reusable(out_dir / f"{name}.json", *args, evaluator_path, need_per_image=True) if reuse else None
    if row is not None:
        log.info("%s: reusing the row already measured for these weights and settings", name)
        return row
    return evaluate(*args, name=name, out_dir=out_dir, evaluator_path=evaluator_path, progress=progress)


def teacher_ceiling(
    teacher: str | Path,
    guidance: float,
    n_images: int = 2000,
    out_dir: str | Path = "results/ceiling",
    sampler: str = "ancestral",
    steps: int = 64,
    evaluator_path: str | Path = "models/evaluator",
    progress: bool = True,
    reuse: bool = True,
) -> dict[str, Any]:
    """The teacher's many-step row at w (64 ancestral steps by default): the ceiling a student at the
    same w is held against, computed once per (weights, evaluator, w, n, prompt set) and reused by
    hash (`evaluate_once`). Its name carries w and n (`teacher-ancestral-64-w3-n2000`), so ceilings
    at other w or image counts never overwrite each other."""
    return evaluate_once(teacher, sampler, steps, guidance, n_images, out_dir, evaluator_path, progress, reuse)


def evaluate(
    model_path: str | Path,
    sampler: str,
    steps: int,
    guidance: float,
    n_images: int = 2000,
    name: str | None = None,
    out_dir: str | Path = "results",
    evaluator_path: str | Path = "models/evaluator",
    batch_size: int = 250,
    progress: bool = True,
    resamples: int = RESAMPLES,
    analytic: bool = False,
) -> dict[str, Any]:
    """Generate, score, and write `out_dir/<name>.json`, its per-image sidecar `out_dir/<name>.npz`
    and `out_dir/<name>.png`. With `analytic`, the row also holds adherence by the second,
    independent judge (`distill.evaluation.analytic`: `adherence_analytic`, its intervals and the
    reader's accuracy on this row's renders) and its sidecar `out_dir/<name>.analytic.npz`."""
    if sampler not in SAMPLER_NAMES:
        raise ValueError(f"--sampler must be one of {SAMPLER_NAMES}, got {sampler!r}")
    evaluator, ev_manifest = load_evaluator(evaluator_path)
    model, cfg = load_denoiser(model_path)
    trained_for = (student_info(model_path) or {}).get("sampler")
    if trained_for is not None and trained_for != sampler:
        log.warning("%s was distilled for the %s sampler; evaluating it with %s", model_path, trained_for, sampler)
    encoder = TextEncoder(cfg.text)
    items = eval_set(n_images)
    ref = reference_images(items, cfg.model.resolution)
    t0 = time.perf_counter()
    images, evaluations = generate(model, encoder, items, sampler, steps, guidance, batch_size, progress)
    seconds = time.perf_counter() - t0
    name = name or f"{Path(model_path).name}-{sampler}-{steps}-w{guidance:g}"
    ident = identity(model_path, evaluator_path)
    meta = {
        "name": name, "model": str(model_path), "sampler": sampler, "steps": steps, "guidance": guidance,
        "n_images": len(items), "eval_seed": EVAL_SEED, "eval_set_version": EVAL_SET_VERSION,
        "resolution": cfg.model.resolution, **ident,
    }  # fmt: skip
    figures, per_image = measure(evaluator, images, ref, items, resamples, meta=meta)
    row = {
        "name": name,
        "model": str(model_path),
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "nfe": evaluations / len(items),
        "nfe_per_step": nfe_per_step(model, guidance),
        "n_images": len(items),
        **figures,
        "seconds_per_image": seconds / len(items),
        "training": training_record(model_path),
        "evaluator_accuracy": ev_manifest["accuracy"],
        **ident,
        "eval_seed": EVAL_SEED,
        "eval_set_version": EVAL_SET_VERSION,
        "machine": machine(),
        "git_sha": git_sha(),
        "per_image": f"{name}.npz",
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if analytic:
        from distill.evaluation.analytic import second_judge

        figures_2, per_image_2 = second_judge(per_image, images, ref, items, resamples)
        row.update(figures_2, per_image_analytic=f"{name}.analytic.npz")
        per_image_2.save(out_dir / f"{name}.analytic.npz")
    per_image.save(out_dir / f"{name}.npz")
    (out_dir / f"{name}.json").write_text(json.dumps(row, indent=2))
    k = min(GRID_IMAGES, len(items))
    save_grid(out_dir / f"{name}.png", images[:k], [e.item.caption for e in items[:k]], cols=8)
    return row
