"""`results/teacher_ablation.md` from the runs of `scripts/teacher_ablation.sh`.

One row per short teacher run: what it changed against the base preset, its training (steps,
images seen, wall time), its serving cost (parameters, GFLOP and ONNX Runtime CPU time per
evaluation, from `fewstep bench model-cost`), and its evaluation at the same sampler, guidance
and prompts with 95% bootstrap intervals, two-object adherence first (the figure the ablation is
about), then where two-object prompts fail (count, colour, shape, position), one-object and
held-out figures, and FD.

    python -m distill.reports.teacher runs/teacher-ablation results/teacher_ablation.md
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# What each run changes against the preset, for the table (the configs hold the truth).
SHOWN = (
    ("model", "base_channels"),
    ("model", "cross_attn_resolutions"),
    ("model", "self_attn_resolutions"),
    ("model", "heads"),
    ("model", "num_res_blocks"),
    ("data", "p_two_objects"),
    ("optim", "lr"),
    (None, "batch_size"),
    (None, "init_from"),
    ("text", "max_tokens"),
)
BASE_RUNS = ("ft-base", "base")  # the run the others are compared against, the first present


ATTRIBUTES = ("count", "colour", "shape", "position")


def _get(cfg: dict[str, Any], section: str | None, key: str) -> Any:
    return cfg.get(key) if section is None else cfg.get(section, {}).get(key)


def changes(cfg: dict[str, Any], base: dict[str, Any]) -> str:
    diff = [f"{key}={_get(cfg, sec, key)}" for sec, key in SHOWN if _get(cfg, sec, key) != _get(base, sec, key)]
    return ", ".join(diff) or "(base)"


def with_ci(row: dict[str, Any], *path: str, digits: int = 2) -> str:
    """'0.41 [0.35, 0.47]' from a row's figure and its mirrored `<figure>_ci` interval, when present."""
    value: Any = row
    for p in path:
        value = value.get(p) if isinstance(value, dict) else None
    ci: Any = row.get(f"{path[0]}_ci")
    for p in path[1:]:
        ci = ci.get(p) if isinstance(ci, dict) else None
    if value is None:
        return "-"
    fmt = f"{{:.{digits}f}}" if isinstance(value, float) and abs(value) < 10 else "{:.0f}"
    text = fmt.format(value)
    if isinstance(ci, list | tuple) and len(ci) == 2 and None not in ci:
        text += " [" + ", ".join(fmt.format(c) for c in ci) + "]"
    return text


def _config(run: Path) -> dict[str, Any]:
    """A run's training config (a packed model's config.json nests it under "config")."""
    cfg = json.loads((run / "config.json").read_text())
    return cfg.get("config", cfg) if "config" in cfg and isinstance(cfg["config"], dict) else cfg


def markdown(out: Path, cost_file: Path | None = None) -> str:
    rows = {p.stem: json.loads(p.read_text()) for p in sorted((out / "eval").glob("*.json"))}
    if not rows:
        raise FileNotFoundError(f"{out}/eval: no evaluation rows")
    cost = json.loads(cost_file.read_text())["models"] if cost_file and cost_file.is_file() else {}
    base = next((out / b for b in BASE_RUNS if (out / b / "config.json").is_file()), None)
    base_cfg = _config(base) if base else {}
    head = (
        "| run | change | params | GFLOP / eval | ORT ms / eval | steps x batch | wall min | 2 obj | "
        "2 obj: count | colour | shape | position | 1 obj | held-out pair | held-out phrasing (same scenes) | FD |"
    )
    lines = [head, "|" + " --- |" * 16]
    for name, r in rows.items():
        cfg = _config(out / name)
        summary_file = out / name / "summary.json"
        summary = json.loads(summary_file.read_text()) if summary_file.is_file() else {}
        c = cost.get(name, {})
        phr = with_ci(r, "adherence", "held_out_phrasing")
        phr += f" ({with_ci(r, 'adherence', 'held_out_phrasing_reference')})"
        cost_cells = (
            f"{c['params'] / 1e6:.2f}M | {c['gflop_per_eval']:.2f} | {c['ort_ms_per_eval']:.2f}" if c else "- | - | -"
        )
        lines.append(f"| {name} | {changes(cfg, base_cfg)} | {cost_cells} | ")
        lines[-1] += (
            f"{summary.get('steps', '-')} x {cfg.get('batch_size')} | {summary.get('wall_s', 0) / 60:.0f} | "
            f"{with_ci(r, 'adherence', 'two_objects')} | "
            + " | ".join(with_ci(r, "adherence", "two_objects_per_attribute", k) for k in ATTRIBUTES)
            + f" | {with_ci(r, 'adherence', 'one_object')} | {with_ci(r, 'adherence', 'held_out')} | {phr} "
            f"| {with_ci(r, 'fd')} |"
        )
    any_row = next(iter(rows.values()))
    intro = (
        "# Teacher ablation: what helps two objects bind\n\n"
        "Rows come from `scripts/teacher_ablation.sh` (its header says what each run is): one change at a "
        "time, the same training steps and batch, one CPU thread per run, side by side. `start` is the "
        "committed teacher before any of it; `scratch` a run from random weights on the same budget. "
        "Each is scored at "
        f"{any_row['steps']} {any_row['sampler']} steps, w = {any_row['guidance']:g}, on the first "
        f"{any_row['n_images']} prompts of the evaluation set (version {any_row.get('eval_set_version', 1)}); "
        "95% bootstrap intervals over images in brackets. The rows use 400 images, not the evaluation's "
        "2,000: each run is about 30 CPU-minutes of training, and scoring it at 2,000 images would cost "
        "half as much again; the intervals (about +-0.03 on two-object adherence) say what 400 can tell "
        "apart. Cost: `fewstep bench model-cost` "
        "(ONNX Runtime CPU provider, one thread, batch 16, interleaved rounds, medians). "
        f"Machine: {any_row.get('machine', '-')}.\n\n"
    )
    return intro + "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__)
        return 2
    out, target = Path(argv[0]), Path(argv[1])
    cost = Path(argv[2]) if len(argv) == 3 else out / "cost.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(markdown(out, cost))
    print(target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
