"""`fewstep eval`: sample a model on a fixed prompt set and score it with the frozen evaluator.

The prompt set, the image seeds and the reference renders are fixed by `EVAL_SEED`, so every
results row is comparable: n prompts, of which 80% are drawn like training captions and 20%
contain a held-out colour-shape pair (pink triangle, cyan cross, orange square, purple circle).

Scores (`shapes-world.md`, "Evaluation on this world"):
- adherence: the share of images whose predicted scene satisfies everything the prompt says,
  over the in-distribution prompts (`overall`, `one_object`, `two_objects`), over the held-out
  ones (`held_out`), and per attribute over the prompts that state that attribute;
- FD and KID of evaluator features against renders of the prompts' own scenes; precision and
  recall on the same features; the total variation distance of free attributes (background,
  size, position where the prompt leaves them free) between generated and reference scenes.
"""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from distill.checkpoint import load_denoiser, student_info, weights_file
from distill.data import to_uint8
from distill.denoise import GuidedDenoiser, encode_cond, nfe_per_step
from distill.evaluator import load_evaluator, predict
from distill.grid import save_grid
from distill.metrics import frechet_distance, kernel_inception_distance, precision_recall, total_variation
from distill.text import TextEncoder
from fewstep import shapes
from fewstep.bundle import sha256_file
from fewstep.rng import SeededNoise
from fewstep.sampler import SAMPLERS

log = logging.getLogger(__name__)

EVAL_SEED = 31337
HELD_OUT_SHARE = 0.2
SAMPLER_NAMES = ("ancestral", "ddim", "dpmpp-2m", "unipc")
GRID_IMAGES = 32


@dataclass(frozen=True)
class EvalItem:
    item: shapes.CaptionedScene
    spec: shapes.PromptSpec
    held_out: bool
    seed: int


def eval_set(n: int) -> list[EvalItem]:
    """n fixed prompts: the first 80% like training captions, the rest with a held-out pair."""
    n_held = round(n * HELD_OUT_SHARE)
    items = [(shapes.sample(EVAL_SEED, i, "train"), False) for i in range(n - n_held)]
    items += [(shapes.sample(EVAL_SEED + 1, i, "held_out"), True) for i in range(n_held)]
    return [EvalItem(it, shapes.parse_prompt(it.caption), h, i) for i, (it, h) in enumerate(items)]


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
    denoise = GuidedDenoiser(model)
    out = []
    for i in tqdm(range(0, len(items), batch_size), disable=not progress, desc=f"{sampler} {steps} steps"):
        chunk = items[i : i + batch_size]
        cond = encode_cond(encoder, [e.item.caption for e in chunk])
        noise = SeededNoise([e.seed for e in chunk], shape)
        with torch.inference_mode():
            if sampler in SAMPLERS:
                x = SAMPLERS[sampler](denoise, steps, cond, guidance, noise, like)
            else:
                from distill.solvers import diffusers_sample

                x = diffusers_sample(denoise, sampler, steps, cond, guidance, noise, like)
        out.append(to_uint8(x))
    return np.concatenate(out), denoise.evaluations


def adherence(pred: list[shapes.Scene], items: list[EvalItem]) -> dict[str, Any]:
    checks = [shapes.satisfies(p, e.spec) for p, e in zip(pred, items, strict=True)]
    ind = [i for i, e in enumerate(items) if not e.held_out]

    def share(idx: list[int], key: str = "all") -> float | None:
        return float(np.mean([checks[i][key] for i in idx])) if idx else None

    stated = {
        "count": ind,
        "colour": ind,
        "shape": ind,
        "background": [i for i in ind if items[i].spec.background is not None],
        "size": [i for i in ind if any(o.size is not None for o in items[i].spec.objects)],
        "position": [i for i in ind if any(o.cell is not None for o in items[i].spec.objects)],
    }
    two = {i for i in ind if len(items[i].spec.objects) == 2}
    return {
        "overall": share(ind),
        "one_object": share([i for i in ind if len(items[i].spec.objects) == 1]),
        "two_objects": share(sorted(two)),
        "held_out": share([i for i, e in enumerate(items) if e.held_out]),
        "per_attribute": {k: share(idx, k) for k, idx in stated.items()},
        # Where two-object prompts fail: the count, or binding colour and shape to each object, or
        # placing them (scenes are matched to the prompt by the best assignment of its objects).
        "two_objects_per_attribute": {k: share([i for i in idx if i in two], k) for k, idx in stated.items()},
    }


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


def score(evaluator, images: np.ndarray, ref: np.ndarray, items: list[EvalItem]) -> dict[str, Any]:
    pred, feats = predict(evaluator, images)
    _, ref_feats = predict(evaluator, ref)
    # KID's cubic kernel (x.y / d + 1)^3 assumes features of order one (Inception pool features);
    # ours are unnormalised, so centre both sets on the reference mean and divide by the
    # reference's overall standard deviation (one scalar: per-dimension scaling would blow up
    # near-constant dimensions), or a few huge kernel values dominate the estimate.
    mu, sd = ref_feats.mean(0), float(ref_feats.std()) + 1e-12
    kid, kid_std = kernel_inception_distance((ref_feats - mu) / sd, (feats - mu) / sd)
    precision, recall = precision_recall(ref_feats, feats)
    return {
        "fd": frechet_distance(ref_feats, feats),
        "kid": kid,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
        "adherence": adherence(pred, items),
        "free_attribute_tv": free_attribute_tv(pred, items),
    }


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
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return sha + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


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
) -> dict[str, Any] | None:
    """The row already written at `row_file` if it measured exactly this (same weights, evaluator,
    sampler, steps, guidance, image count and eval seed), else None: lets long tables skip the rows
    whose inputs have not changed (the teacher's many-step rows cost minutes each on a CPU)."""
    if not row_file.is_file():
        return None
    row = json.loads(row_file.read_text())
    want = {
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "n_images": n_images,
        "eval_seed": EVAL_SEED,
        **identity(model_path, evaluator_path),
    }
    return row if all(row.get(k) == v for k, v in want.items()) else None


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
) -> dict[str, Any]:
    """Generate, score, and write `out_dir/<name>.json` and `out_dir/<name>.png`."""
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
    row = {
        "name": name,
        "model": str(model_path),
        "sampler": sampler,
        "steps": steps,
        "guidance": guidance,
        "nfe": evaluations / len(items),
        "nfe_per_step": nfe_per_step(model, guidance),
        "n_images": len(items),
        **score(evaluator, images, ref, items),
        "seconds_per_image": seconds / len(items),
        "evaluator_accuracy": ev_manifest["accuracy"],
        **identity(model_path, evaluator_path),
        "eval_seed": EVAL_SEED,
        "machine": machine(),
        "git_sha": git_sha(),
    }
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(row, indent=2))
    k = min(GRID_IMAGES, len(items))
    save_grid(out_dir / f"{name}.png", images[:k], [e.item.caption for e in items[:k]], cols=8)
    return row
