"""`results/mm_recipe.md` from the runs of `scripts/mm_recipe.sh`: the combined ablation that chooses
the moment-matching recipe at equal training image passes.

One row per arm: what it changes against `base` (read from the two runs' configs, so the table
cannot misstate a setting), the training it got (image passes, network evaluations per pass,
updates), its figures with 95% intervals (FD at the row's image count, FD extrapolated to infinite
images, KID, adherence overall and on two-object prompts, grain) and its paired differences from
`base` on the same prompts and seeds (`fewstep eval compare`). Then the run-to-run spread (the base
at a second seed, paired with the first) and the adherence by prompt form of every arm, because an
average over the evaluation's mix can hide a form users write often.

    python -m distill.reports.recipe runs/mm-recipe results/mm_recipe results/mm_recipe.md [CEILING_ROW]
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from distill.evaluation.metrics import frechet_distance_extrapolated
from distill.evaluation.per_image import PerImage, form_of
from distill.reports.tables import _fmt, _fmt_ci

BASE = "base"
# Settings that say how a run was sized or logged, not what it learnt: never an arm's "change".
BOOKKEEPING = {"iters", "log_every", "ckpt_every", "sample_every", "device", "threads", "preset"}
FORMS = [form_of(n, pos, size) for n in (1, 2) for pos in (True, False) for size in (True, False)]


def changes(base_cfg: dict[str, Any], cfg: dict[str, Any]) -> str:
    """The settings in which `cfg` differs from `base_cfg`, as `key=value` (nested keys dotted)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            if isinstance(v, dict):
                out.update(flat(v, f"{prefix}{k}."))
            else:
                out[f"{prefix}{k}"] = v
        return out

    a, b = flat(base_cfg), flat(cfg)
    diff = [f"{k}={b.get(k)}" for k in sorted(set(a) | set(b)) if k not in BOOKKEEPING and a.get(k) != b.get(k)]
    return ", ".join(diff) or "-"


def _diff(d: dict[str, Any] | None, digits: int) -> str:
    """`+1.2 [-0.3, +2.7]` from a `fewstep eval compare` figure (B - A), or "-"."""
    if not d or d.get("diff") is None:
        return "-"
    lo, hi = d["ci"]
    mark = " *" if lo > 0 or hi < 0 else ""  # resolved: the interval excludes 0
    return f"{d['diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]{mark}"


def load_arms(runs: Path) -> dict[str, dict[str, Any]]:
    """Per evaluated arm: its row, config and training summary."""
    arms = {}
    for row_path in sorted((runs / "eval").glob("*.json")):
        name = row_path.stem
        run = runs / name
        if not (run / "config.json").is_file():
            continue
        arms[name] = {
            "row": json.loads(row_path.read_text()),
            "config": json.loads((run / "config.json").read_text()),
            "summary": json.loads((run / "summary.json").read_text()),
        }
    if BASE not in arms:
        raise FileNotFoundError(f"{runs}/eval/{BASE}.json: the base arm is missing")
    return arms


def ceiling_row(path: Path) -> dict[str, Any]:
    """The teacher's ceiling row (64 ancestral steps at the same w, 2,000 images), with the figures
    rows gained since it was measured (FD at infinite images, adherence by form) recomputed from its
    per-image sidecar, so it sits in the table like an arm."""
    row = json.loads(path.read_text())
    rec = PerImage.load(path.with_suffix(".npz"))
    fit = frechet_distance_extrapolated(rec.ref_features.astype("float64"), rec.features.astype("float64"))
    counts = {path[1]: int(mask.sum()) for path, mask, _ in rec.adherence_groups() if path[0] == "by_form"}
    return {**row, "fd_infinity": fit["fd_infinity"], "adherence": rec.adherence(), "form_counts": counts}


def recipe_markdown(runs: Path, compare_dir: Path, ceiling: Path | None = None) -> str:
    arms = load_arms(runs)
    base = arms[BASE]
    top = ceiling_row(ceiling) if ceiling is not None and ceiling.is_file() else None

    def paired(name: str) -> dict[str, Any] | None:
        path = compare_dir / f"base-vs-{name}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    head = [
        "| arm | changes against base | image passes | evals / pass | updates | FD | FD (inf. images) | KID x 1e3 "
        "| adherence | 2 obj | grain | FD - base | adherence - base | 2 obj - base | grain - base |",
        "|" + " --- |" * 15,
    ]
    lines = list(head)
    if top is not None:
        adh, ci = top["adherence"], top.get("adherence_ci", {})
        kid_ci = [1e3 * v for v in top["kid_ci"]] if top.get("kid_ci") else None
        lines.append(
            f"| teacher ceiling ({top['steps']} {top['sampler']} steps, {top['nfe']} evals an image) | - | - | - | - "
            f"| {_fmt_ci(top['fd'], top.get('fd_ci'), 1)} | {_fmt(top.get('fd_infinity'), 1)} "
            f"| {_fmt_ci(1e3 * top['kid'], kid_ci, 2)} | {_fmt_ci(adh['overall'], ci.get('overall'))} "
            f"| {_fmt(adh['two_objects'])} | {_fmt_ci(top.get('grain'), top.get('grain_ci'), 2)} | - | - | - | - |"
        )
    order = [BASE, *sorted(n for n in arms if n != BASE)]
    for name in order:
        a = arms[name]
        r, s = a["row"], a["summary"]
        adh, ci = r["adherence"], r.get("adherence_ci", {})
        kid_ci = [1e3 * v for v in r["kid_ci"]] if r.get("kid_ci") else None
        c = paired(name) if name != BASE else None
        lines.append(
            f"| {name} | {changes(base['config'], a['config']) if name != BASE else 'the earlier recipe'} "
            f"| {s.get('image_passes', '-')} | {_fmt(s.get('evals_per_image_pass'), 2)} | {s['iters']} "
            f"| {_fmt_ci(r['fd'], r.get('fd_ci'), 1)} | {_fmt(r.get('fd_infinity'), 1)} "
            f"| {_fmt_ci(1e3 * r['kid'], kid_ci, 2)} | {_fmt_ci(adh['overall'], ci.get('overall'))} "
            f"| {_fmt(adh['two_objects'])} | {_fmt_ci(r.get('grain'), r.get('grain_ci'), 2)} "
            f"| {_diff(c and c['fd'], 1)} | {_diff(c and c['adherence']['overall'], 3)} "
            f"| {_diff(c and c['adherence']['two_objects'], 3)} | {_diff(c and c['grain'], 2)} |"
        )
    forms = [
        "| arm | " + " | ".join(f.replace("_", " ") for f in FORMS) + " |",
        "|" + " --- |" * (len(FORMS) + 1),
    ]
    if top is not None:
        forms.append("| prompts | " + " | ".join(str(top["form_counts"].get(f, "-")) for f in FORMS) + " |")
    rows = ([("teacher ceiling", top)] if top is not None else []) + [(n, arms[n]["row"]) for n in order]
    for name, row in rows:
        by_form = row["adherence"].get("by_form") or {}
        forms.append(f"| {name} | " + " | ".join(_fmt(by_form.get(f)) for f in FORMS) + " |")
    r0 = base["row"]
    text = (
        "# Choosing the moment-matching recipe (mm-alt, K = 8)\n\n"
        "Each arm: `fewstep distill --method mm-alt --steps 8` from `models/teacher`, conditioned on w in [1, 5] "
        "with a student EMA of 0.99 (the served form), batch 32 on one CPU thread (two arms side by side), every "
        "arm given the same budget of training images (`--budget-images`; a guided warm-start update draws one "
        "batch, an mm-alt update two), changing one thing against `base`, the recipe of every earlier table. Then "
        f"{r0['n_images']} images (eval seed {r0['eval_seed']}) with the 8-step sampler at w = {r0['guidance']:g}, "
        "and a paired comparison with `base` on the same prompts and seeds (95% bootstrap intervals; `*`: "
        "resolved, the interval excludes 0). FD is at the row's image count; FD (inf. images) is the same FD "
        "extrapolated to infinitely many images (`distill.evaluation.metrics.frechet_distance_extrapolated`); KID "
        "is unbiased. Lower FD, KID and grain are better; higher adherence. "
        f"Machine: {r0['machine']}. Regenerate: `scripts/mm_recipe.sh`.\n\n" + "\n".join(lines) + "\n"
    )
    spread = paired("base-seed1")
    if spread:
        text += (
            "\n**Run-to-run spread** (the base recipe at a second seed: network initialisation, noise and data "
            f"stream): FD {_diff(spread['fd'], 1)}, adherence {_diff(spread['adherence']['overall'], 3)}, grain "
            f"{_diff(spread['grain'], 2)}. A difference between arms smaller than this is not evidence.\n"
        )
    winners = winning_arms(runs, compare_dir)
    text += (
        "\n**The chosen recipe** (`python -m distill.reports.recipe --chosen`, what `scripts/long_runs.sh` trains): "
        "the distillation defaults with the changes of every arm that dominates the base (resolved better on at "
        "least one of FD, adherence and grain and resolved worse on none, a difference counting only where it "
        "also exceeds the run-to-run spread above): "
        + (", ".join(winners) if winners else "none, so the defaults")
        + " (`"
        + (" ".join(chosen_overrides(runs, compare_dir)) or "no overrides")
        + "`).\n"
    )
    text += (
        "\n## Adherence by prompt form\n\nIn-distribution prompts, by objects named and whether a position "
        "(+position) and a size (+size) are stated; every figure is the share of images that satisfy the "
        "whole prompt.\n\n" + "\n".join(forms) + "\n"
    )
    return text


CEILING = Path("results/ceiling/teacher-ancestral-64-w3-n2000.json")
SPREAD_ARMS = {BASE, "base-seed1"}  # the base and its second seed: reference points, never a change


def _resolved(d: dict[str, Any], spread: dict[str, Any] | None = None) -> int:
    """+1 where the paired interval lies above 0, -1 below, 0 where it holds 0 (or is missing), or
    where the difference is no larger than the run-to-run spread of the same figure (`spread`: the
    base paired with itself at another seed): the paired interval covers the evaluation's sampling
    noise only, not training's."""
    if not d or d.get("ci") is None:
        return 0
    if spread and spread.get("diff") is not None and abs(d["diff"]) <= abs(spread["diff"]):
        return 0
    lo, hi = d["ci"]
    return 1 if lo > 0 else -1 if hi < 0 else 0


def _spread(compare_dir: Path) -> dict[str, Any] | None:
    path = compare_dir / "base-vs-base-seed1.json"
    return json.loads(path.read_text()) if path.is_file() else None


def winning_arms(runs: Path, compare_dir: Path) -> list[str]:
    """The arms that dominate the base: resolved better on at least one of FD (lower), overall
    adherence (higher) and grain (lower: the grain is what separated moment matching from the
    baselines, and a target of its own) and resolved worse on none of them, by the paired 95%
    intervals of `fewstep eval compare`, a difference counting only where it also exceeds the
    run-to-run spread (`_resolved`)."""
    spread = _spread(compare_dir) or {"fd": None, "grain": None, "adherence": {"overall": None}}
    out = []
    for name in sorted(load_arms(runs)):
        path = compare_dir / f"base-vs-{name}.json"
        if name in SPREAD_ARMS or not path.is_file():
            continue
        c = json.loads(path.read_text())
        fd = -_resolved(c["fd"], spread["fd"])
        adh = _resolved(c["adherence"]["overall"], spread["adherence"]["overall"])
        grain = -_resolved(c["grain"], spread["grain"])
        if max(fd, adh, grain) > 0 and min(fd, adh, grain) >= 0:
            out.append(name)
    return out


def chosen_overrides(runs: Path, compare_dir: Path) -> list[str]:
    """The chosen recipe as `--set key=value` overrides of the distillation config's defaults: the
    changes of every winning arm (`winning_arms`). A setting no arm resolved keeps its default
    (the base arm pinned the earlier recipe's values only to be the reference)."""
    arms = load_arms(runs)
    base = arms[BASE]["config"]
    recipe: dict[str, str] = {}
    for name in winning_arms(runs, compare_dir):
        for item in changes(base, arms[name]["config"]).split(", "):
            key, value = item.split("=", 1)
            if key in recipe and recipe[key] != value:
                raise ValueError(f"winning arms disagree on {key}: {recipe[key]} and {value}")
            recipe[key] = value
    return [f"--set {k}={v}" for k, v in recipe.items()]


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--chosen":  # the recipe's overrides, for scripts/long_runs.sh
        print(" ".join(chosen_overrides(Path(argv[1]), Path(argv[2]))))
        return 0
    runs, compare_dir, md = Path(argv[0]), Path(argv[1]), Path(argv[2])
    md.write_text(recipe_markdown(runs, compare_dir, Path(argv[3]) if len(argv) > 3 else CEILING))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
