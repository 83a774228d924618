"""`fewstep eval compare A B`: a paired comparison of two models on the same prompts and seeds.

Why paired: two rows measured on the same prompts with the same noise share most of their
sampling noise (a hard prompt is hard for both), so the difference B - A is far better determined
than either figure alone. The interval of each difference comes from one bootstrap over image
indices that resamples both models' images of a prompt (and the prompt's render) together.

A and B are model directories (evaluated, or reused by hash, through `distill.evaluation.evaluate`), row
JSON files whose per-image sidecar (`<name>.npz`) is beside them, or the sidecars themselves. Two
sides are compared only if their prompts, seeds, eval seed, prompt-set version, image count and
evaluator agree (`distill.evaluation.per_image.check_paired`). Writes `<out_dir>/<name>.json` and `.md`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distill.evaluation.bootstrap import (
    BOOTSTRAP_SEED,
    LEVEL,
    RESAMPLES,
    fd_resampled,
    kid_resampled,
    mean_resampled,
    percentile_interval,
    resample_counts,
    shifted_interval,
)
from distill.evaluation.per_image import PerImage, check_paired

log = logging.getLogger(__name__)


@dataclass
class Side:
    """One side of a comparison: its label, what its row says, and its per-image record."""

    label: str
    row: dict[str, Any]
    per_image: PerImage


def load_side(
    spec: str | Path,
    sampler: str | None = None,
    steps: int | None = None,
    guidance: float = 3.0,
    n_images: int = 2000,
    rows_dir: str | Path = "results/rows",
    ceiling_dir: str | Path = "results/ceiling",
    evaluator_path: str | Path = "models/evaluator",
    progress: bool = True,
    reuse: bool = True,
) -> Side:
    """A row JSON (with its sidecar), a sidecar, or a model directory (evaluated or reused).

    A model directory is sampled with `sampler` and `steps` if given, else a student with the
    sampler and K it was distilled for, and a teacher with its ceiling (64 ancestral steps, kept
    in `ceiling_dir` and shared by every comparison at that w and image count)."""
    path = Path(spec)
    if path.is_file() and path.suffix == ".json":
        row = json.loads(path.read_text())
        if not row.get("per_image"):
            raise ValueError(
                f"{path} has no per-image sidecar (written before `fewstep eval` kept one): re-evaluate it, "
                "or pass its model directory"
            )
        return Side(str(row.get("name") or path.stem), row, PerImage.load(path.parent / row["per_image"]))
    if path.is_file() and path.suffix == ".npz":
        rec = PerImage.load(path)
        sibling = path.with_suffix(".json")
        row = json.loads(sibling.read_text()) if sibling.is_file() else dict(rec.meta)
        return Side(str(rec.meta.get("name") or path.stem), row, rec)
    if path.is_dir():
        from distill.evaluation.evaluate import evaluate_once, teacher_ceiling
        from distill.kit.checkpoint import student_info

        info = student_info(path)
        if info is None and sampler is None and steps is None:
            row = teacher_ceiling(path, guidance, n_images, ceiling_dir, evaluator_path=evaluator_path,
                                  progress=progress, reuse=reuse)  # fmt: skip
            out_dir = Path(ceiling_dir)
        else:
            smp = sampler or (info or {}).get("sampler", "ancestral")
            k = steps or int((info or {}).get("steps", 64))
            row = evaluate_once(path, smp, k, guidance, n_images, rows_dir, evaluator_path, progress, reuse)
            out_dir = Path(rows_dir)
        return Side(str(row["name"]), row, PerImage.load(out_dir / row["per_image"]))
    raise FileNotFoundError(f"{spec}: not a model directory, a row .json or a sidecar .npz")


def _diff(a_values: np.ndarray, b_values: np.ndarray, a: float | None, b: float | None, shift: bool) -> dict:
    if a is None or b is None:
        return {"a": a, "b": b, "diff": None, "ci": None}
    d = b - a
    values = b_values - a_values
    ci = shifted_interval(values, d) if shift else percentile_interval(values)
    return {"a": a, "b": b, "diff": d, "ci": ci}


def _share(checks: np.ndarray, mask: np.ndarray) -> float | None:
    return float(checks[mask].mean()) if mask.any() else None


def _mean(v: np.ndarray) -> float | None:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else None


def paired(a: PerImage, b: PerImage, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> dict[str, Any]:
    """B - A of FD, KID, grain and every adherence figure, each with its 95% paired bootstrap
    interval (one set of resampled image indices for both sides). Raises if the two records are
    not measured on the same prompts and seeds."""
    check_paired(a, b)
    n = a.n
    counts = resample_counts(n, resamples, seed)
    ones = np.ones((1, n))
    ref = a.ref_features.astype(np.float64)
    gen_a, gen_b = a.features.astype(np.float64), b.features.astype(np.float64)
    fd_a, fd_b = (float(v[0]) for v in fd_resampled(ones, ref, gen_a, gen_b))
    fd_va, fd_vb = fd_resampled(counts, ref, gen_a, gen_b)
    kid_ref, kid_a = a.kid_features()
    mu, sd = ref.mean(0), float(ref.std()) + 1e-12
    kid_b = (gen_b - mu) / sd
    (ka, kb), (kva, kvb) = kid_resampled(counts, kid_ref, kid_a, kid_b)
    out: dict[str, Any] = {
        "fd": _diff(fd_va, fd_vb, fd_a, fd_b, shift=True),
        "kid": _diff(kva, kvb, ka, kb, shift=True),
        "grain": _diff(
            mean_resampled(counts, a.grain), mean_resampled(counts, b.grain), _mean(a.grain), _mean(b.grain), False
        ),
        "adherence": {},
    }
    for path, mask, c in a.adherence_groups():
        va = mean_resampled(counts, a.checks[:, c], mask)
        vb = mean_resampled(counts, b.checks[:, c], mask)
        tree = out["adherence"]
        for key in path[:-1]:
            tree = tree.setdefault(key, {})
        tree[path[-1]] = _diff(va, vb, _share(a.checks[:, c], mask), _share(b.checks[:, c], mask), False)
    return out


def _describe(side: Side) -> dict[str, Any]:
    keys = ("model", "sampler", "steps", "guidance", "nfe", "n_images", "model_sha256", "training")
    return {"label": side.label, **{k: side.row.get(k) for k in keys}}


def compare(
    a: Side, b: Side, out_dir: str | Path = "results/compare", name: str | None = None,
    resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED,
) -> dict[str, Any]:  # fmt: skip
    """Compare two sides, write `<out_dir>/<name>.json` and `.md`, and return the comparison."""
    if a.row.get("guidance") != b.row.get("guidance"):
        log.warning(
            "%s is at w = %s and %s at w = %s: a comparison across guidance scales mixes two effects",
            a.label, a.row.get("guidance"), b.label, b.row.get("guidance"),
        )  # fmt: skip
    figures = paired(a.per_image, b.per_image, resamples, seed)
    meta = a.per_image.meta
    result = {
        "a": _describe(a),
        "b": _describe(b),
        "n_images": a.per_image.n,
        "eval_seed": meta.get("eval_seed"),
        "eval_set_version": meta.get("eval_set_version"),
        "bootstrap": {"resamples": resamples, "seed": seed, "level": LEVEL, "paired": True},
        **figures,
    }
    name = name or f"{a.label}-vs-{b.label}"
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out_dir / f"{name}.md").write_text(markdown(result))
    return result


def _rows(result: dict[str, Any]) -> list[tuple[str, dict[str, Any], int]]:
    rows = [("FD", result["fd"], 1), ("KID", result["kid"], 4), ("grain (8-bit levels)", result["grain"], 2)]
    adh = result["adherence"]
    for key in ("overall", "one_object", "two_objects", "held_out", "held_out_phrasing"):
        if key in adh:
            rows.append((f"adherence {key.replace('_', ' ')}", adh[key], 3))
    for group, title in (("per_attribute", "adherence"), ("two_objects_per_attribute", "2-obj adherence")):
        for attr, d in adh.get(group, {}).items():
            rows.append((f"{title}: {attr}", d, 3))
    return rows


def markdown(result: dict[str, Any]) -> str:
    """The comparison as a small table: each figure for A and B, B - A and its paired interval; a
    difference whose interval excludes 0 is marked."""

    def f(v: float | None, digits: int) -> str:
        return "-" if v is None else f"{v:.{digits}f}"

    a, b = result["a"], result["b"]
    head = (
        f"# {b['label']} against {a['label']} (paired)\n\n"
        f"A: `{a['model']}` ({a['sampler']}, {a['steps']} steps, w = {a['guidance']}); "
        f"B: `{b['model']}` ({b['sampler']}, {b['steps']} steps, w = {b['guidance']}). "
        f"{result['n_images']} images on the same prompts and seeds (eval seed {result['eval_seed']}); "
        f"{int(100 * result['bootstrap']['level'])}% paired bootstrap intervals over images "
        f"({result['bootstrap']['resamples']} resamples). Lower FD, KID and grain are better; higher "
        "adherence is. `*`: the interval excludes 0.\n\n"
        "| figure | A | B | B - A | 95% interval |\n| --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for label, d, digits in _rows(result):
        ci = d["ci"]
        sig = " *" if ci is not None and (ci[0] > 0 or ci[1] < 0) else ""
        interval = "-" if ci is None else f"[{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"
        lines.append(
            f"| {label} | {f(d['a'], digits)} | {f(d['b'], digits)} | {f(d['diff'], digits)}{sig} | {interval} |"
        )
    return head + "\n".join(lines) + "\n"
