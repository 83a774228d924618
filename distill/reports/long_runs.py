"""`results/long_runs.md` and `long_runs.png` from `scripts/long_runs.sh`: each long run's learning
curve against training image passes (FD at the row's image count and at infinite images, KID,
adherence, grain), the teacher's 64-step ceiling beside them, and at each run's latest point the
paired comparisons the targets are stated in: against the ceiling, and moment matching against the
baseline at the same K.

    python -m distill.reports.long_runs runs/long results/long_runs.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from distill.evaluation.compare import paired
from distill.evaluation.per_image import PerImage
from distill.kit.plots import panel_figure
from distill.reports.recipe import CEILING, _diff, ceiling_row
from distill.reports.tables import _fmt, _fmt_ci

POINT = re.compile(r"^(?P<run>.+)-i(?P<images>\d+)$")


def curves(out: Path) -> dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]]:
    """Per run: its evaluated points as (image passes, row, training summary), by image passes."""
    runs: dict[str, list[tuple[int, dict[str, Any], dict[str, Any]]]] = {}
    for path in sorted((out / "eval").glob("*.json")):
        m = POINT.match(path.stem)
        if m is None or path.name.endswith(".summary.json"):
            continue
        summary_path = out / "eval" / f"{path.stem}.summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        runs.setdefault(m["run"], []).append((int(m["images"]), json.loads(path.read_text()), summary))
    return {k: sorted(v, key=lambda p: p[0]) for k, v in sorted(runs.items())}


def _cells(r: dict[str, Any]) -> str:
    adh, ci = r["adherence"], r.get("adherence_ci", {})
    kid_ci = [1e3 * v for v in r["kid_ci"]] if r.get("kid_ci") else None
    return (
        f"{_fmt_ci(r['fd'], r.get('fd_ci'), 1)} | {_fmt(r.get('fd_infinity'), 1)} "
        f"| {_fmt_ci(1e3 * r['kid'], kid_ci, 2)} "
        f"| {_fmt_ci(adh['overall'], ci.get('overall'))} | {_fmt(adh['two_objects'])} "
        f"| {_fmt_ci(r.get('grain'), r.get('grain_ci'), 2)}"
    )


def _paired_cells(a: Path, b: Path) -> str:
    """B - A of FD, adherence and grain with paired intervals, from the two rows' sidecars."""
    c = paired(PerImage.load(a.with_suffix(".npz")), PerImage.load(b.with_suffix(".npz")))
    return f"{_diff(c['fd'], 1)} | {_diff(c['adherence']['overall'], 3)} | {_diff(c['grain'], 2)}"


def long_runs_markdown(out: Path, ceiling: Path = CEILING) -> str:
    runs = curves(out)
    if not runs:
        raise FileNotFoundError(f"{out}/eval: no <run>-i<images>.json rows")
    lines = [
        "| run | K | image passes | updates | evals / pass | FD | FD (inf. images) | KID x 1e3 | adherence | 2 obj "
        "| grain |",
        "|" + " --- |" * 11,
    ]
    top = ceiling_row(ceiling) if ceiling.is_file() else None
    if top is not None:
        lines.append(f"| teacher ceiling ({top['steps']} ancestral steps) | - | - | - | - | {_cells(top)} |")
    for name, points in runs.items():
        for images, r, s in points:
            lines.append(
                f"| {name} | {r['steps']} | {images} | {s.get('iters', '-')} "
                f"| {_fmt(s.get('evals_per_image_pass'), 2)} "
                f"| {_cells(r)} |"
            )
    latest = {name: points[-1] for name, points in runs.items()}
    vs = [
        "| comparison (B - A, paired, at each run's latest point) | FD | adherence | grain |",
        "| --- | --- | --- | --- |",
    ]
    for name, (images, _, _) in latest.items():
        row = out / "eval" / f"{name}-i{images}.json"
        if top is not None and ceiling.with_suffix(".npz").is_file():
            vs.append(f"| {name} ({images} images) - teacher ceiling | {_paired_cells(ceiling, row)} |")
    for k in sorted({p[-1][1]["steps"] for p in runs.values()}):
        mm = [n for n in latest if n.startswith("mm-alt") and latest[n][1]["steps"] == k]
        base = [n for n in latest if not n.startswith("mm-") and latest[n][1]["steps"] == k]
        for a in base:
            for b in mm:
                if latest[a][0] == latest[b][0]:  # like with like: the same image passes
                    pa, pb = (out / "eval" / f"{n}-i{latest[n][0]}.json" for n in (a, b))
                    vs.append(f"| {b} - {a} ({latest[a][0]} images each) | {_paired_cells(pa, pb)} |")
    r0 = next(iter(runs.values()))[0][1]
    return (
        "# Long runs: students against the teacher at equal image passes\n\n"
        "Each run: `scripts/long_runs.sh` (served form: conditioned on w in [1, 5], student EMA 0.99; batch 32 on "
        "one CPU thread, two runs side by side; the learning-rate schedule spans the whole budget, so a point "
        "before the end is measured at a learning rate not yet annealed), evaluated on "
        f"{r0['n_images']} images (eval seed {r0['eval_seed']}) at w = {r0['guidance']:g} with its own K-step "
        "sampler. FD is at that image count, FD (inf. images) extrapolated to infinitely many; KID is unbiased. "
        f"Machine: {r0['machine']}. Plot: `long_runs.png`. Regenerate: `scripts/long_runs.sh`, then "
        "`python -m distill.reports.long_runs runs/long results/long_runs.md`.\n\n"
        + "\n".join(lines)
        + "\n\n"
        + "\n".join(vs)
        + "\n\n`*`: resolved (the paired 95% interval excludes 0). Lower FD and grain are better, higher adherence.\n"
    )


def plot_long_runs(out: Path, png: Path, ceiling: Path = CEILING) -> None:
    """FD at infinite images, adherence and grain against image passes, one line per run, the
    teacher's ceiling dashed."""
    runs = curves(out)
    top = ceiling_row(ceiling) if ceiling.is_file() else None
    panels = [("fd_infinity", "FD (inf. images)"), ("adherence", "adherence"), ("grain", "grain (8-bit levels)")]
    with panel_figure(png, "training image passes", [label for _, label in panels]) as axes:
        for ax, (key, _) in zip(axes, panels, strict=True):

            def value(r: dict[str, Any], key: str = key) -> float | None:
                return r["adherence"]["overall"] if key == "adherence" else r.get(key)

            for name, points in runs.items():
                ax.plot([p[0] for p in points], [value(p[1]) for p in points], marker="o", label=name)
            if top is not None and value(top) is not None:
                ax.axhline(value(top), color="black", linestyle="--", label="teacher ceiling (64 steps)")


def main(argv: list[str]) -> int:
    out, md = Path(argv[0]), Path(argv[1])
    md.write_text(long_runs_markdown(out))
    plot_long_runs(out, md.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
