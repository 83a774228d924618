"""Results tables: run a grid of `fewstep eval` rows and write a Markdown table and a plot.

`fewstep eval table --model models/teacher` regenerates `results/teacher.md`, its JSON rows under
`results/teacher/table/` and `results/teacher_fd_nfe.png` (FD against network evaluations per
sampler). `fewstep eval guidance` sweeps the guidance scale and writes `results/guidance.md` (rows
under `results/guidance/`).

Both reuse a row already written for the same weights, evaluator and settings (`reuse`; the CLI's
`--fresh` re-measures): a 64-step row costs about a quarter of an hour on a CPU, so an
interrupted run resumes where it stopped. The table's rows have their own folder because
`results/teacher/` also holds the teacher's served row (`ancestral-16.json`, 16 steps at 2,000
images, the default model's floor in `distill.reports.winners`), which a 500-image table row of the same
sampler and steps must not overwrite.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

from distill.evaluation.evaluate import evaluate, reusable

log = logging.getLogger(__name__)

# The grid stops at 64 steps: on the v1 teacher (results/teacher_v1/teacher.md) FD was flat from
# 32 steps on (ancestral 446, 448, 443, 444 at 32-256; DDIM 452, 449, 449 at 64-256, each +-50 at
# 500 images), so the 128- and 256-step rows cost about 2.5 of the table's 4 CPU-hours on the
# 2-core VM and moved nothing. The distillation's ceiling (64 ancestral steps) is the grid's top row.
TEACHER_GRID: dict[str, tuple[int, ...]] = {
    "ancestral": (8, 16, 32, 64),
    "ddim": (8, 16, 32, 64),
    "dpmpp-2m": (4, 8, 16),
    "unipc": (4, 8, 16),
}


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _fmt_ci(v: Any, ci: list[float] | None, digits: int = 3) -> str:
    """A figure with its 95% interval, `446.1 [420.3, 471.0]`; rows written before intervals existed
    (no `ci`) print as `_fmt` always did."""
    if ci is None or v is None:
        return _fmt(v)
    return f"{v:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def figure_cells(r: dict[str, Any]) -> dict[str, str]:
    """The cells every results table prints for a row: FD, adherence (overall, 1 obj, 2 obj, held-out)
    with their intervals where the row has them, and the grain of the generated images (with the
    renders' floor) where it was measured."""
    a, ci = r["adherence"], r.get("adherence_ci") or {}
    grain = "-"
    if r.get("grain") is not None:
        grain = f"{_fmt_ci(r['grain'], r.get('grain_ci'), 2)} (renders {r.get('grain_reference') or 0:.2f})"
    return {
        "fd": _fmt_ci(r["fd"], r.get("fd_ci"), 1),
        "overall": _fmt_ci(a["overall"], ci.get("overall")),
        "one_object": _fmt_ci(a["one_object"], ci.get("one_object")),
        "two_objects": _fmt_ci(a["two_objects"], ci.get("two_objects")),
        "held_out": _fmt_ci(a["held_out"], ci.get("held_out")),
        "grain": grain,
    }


def markdown_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| sampler | steps | w | NFE | FD | KID | adherence | 1 obj | 2 obj | held-out | precision | recall "
        "| bg TV | grain | s/image |\n" + "|" + " --- |" * 15 + "\n"
    )
    lines = []
    for r in rows:
        c = figure_cells(r)
        lines.append(
            f"| {r['sampler']} | {r['steps']} | {r['guidance']:g} | {r['nfe']:.0f} | {c['fd']} | "
            f"{_fmt(r['kid'], 4)} | {c['overall']} | {c['one_object']} | {c['two_objects']} | "
            f"{c['held_out']} | {_fmt(r['precision'])} | {_fmt(r['recall'])} | "
            f"{_fmt(r['free_attribute_tv'].get('background'))} | {c['grain']} | {r['seconds_per_image']:.4f} |"
        )
    return head + "\n".join(lines) + "\n"


def plot_fd_vs_nfe(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    samplers = list(dict.fromkeys(r["sampler"] for r in rows))
    for i, sampler in enumerate(samplers):
        pts = sorted((r["nfe"], r["fd"], r.get("fd_ci")) for r in rows if r["sampler"] == sampler)
        # each sampler's points nudged sideways so the 95% intervals (where measured) do not overlap
        x = [p[0] * 2 ** (0.06 * (i - (len(samplers) - 1) / 2)) for p in pts]
        y = [p[1] for p in pts]
        if all(p[2] for p in pts):
            err = [[p[1] - p[2][0] for p in pts], [p[2][1] - p[1] for p in pts]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=sampler)
        else:
            ax.plot(x, y, marker="o", label=sampler)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    if any(r.get("fd_ci") for r in rows):
        ax.set_title("bars: 95% bootstrap intervals", fontsize=9)
    ax.set_xlabel("network evaluations per image (guidance included)")
    ax.set_ylabel("FD (evaluator features)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def teacher_table(
    model: str,
    guidance: float,
    n_images: int,
    out_dir: str | Path = "results",
    grid: dict[str, tuple[int, ...]] | None = None,
    progress: bool = True,
    reuse: bool = True,
) -> list[dict[str, Any]]:
    out_dir = Path(out_dir)
    rows_dir = table_rows_dir(out_dir)
    rows = []
    # Cheapest rows first, and the table is rewritten after every row, so an interrupted run
    # still leaves a consistent (shorter) table.
    plan = sorted(((steps, sampler) for sampler, ss in (grid or TEACHER_GRID).items() for steps in ss))
    for steps, sampler in plan:
        name = f"{sampler}-{steps}"
        if reuse:  # the guidance sweep may have measured this very row (its sampler, steps and w)
            adopt_row(out_dir / "guidance" / f"{sweep_name(sampler, steps, guidance)}.json", rows_dir, name)
        rows.append(_row(model, sampler, steps, guidance, n_images, name, rows_dir, progress, reuse))
        log.info("%s: FD %.3f adherence %.3f", name, rows[-1]["fd"], rows[-1]["adherence"]["overall"])
        ordered = sorted(rows, key=lambda r: (list(TEACHER_GRID).index(r["sampler"]), r["steps"]))
        write_table(ordered, out_dir / "teacher.md", out_dir / "teacher_fd_nfe.png", "Teacher baselines", model)
    return rows


def adopt_row(src: Path, rows_dir: Path, name: str) -> bool:
    """Copy the row `src` (with its per-image sidecar and grid) into `rows_dir` as `name`, unless a
    row is there already. The guidance sweep's row at the table's sampler, steps and w is the same
    measurement (same weights, prompts and seeds) under another name: a quarter of an hour saved on
    a CPU. Whether it still matches the weights is `reusable`'s check afterwards, as for any row."""
    dst = rows_dir / f"{name}.json"
    if dst.is_file() or not src.is_file():
        return False
    row = json.loads(src.read_text())
    rows_dir.mkdir(parents=True, exist_ok=True)
    for ext in ("npz", "png"):
        if (src.parent / f"{src.stem}.{ext}").is_file():
            shutil.copyfile(src.parent / f"{src.stem}.{ext}", rows_dir / f"{name}.{ext}")
    if row.get("per_image"):
        row["per_image"] = f"{name}.npz"
    row["name"] = name
    dst.write_text(json.dumps(row, indent=2))
    log.info("%s: adopted the guidance sweep's row %s (the same measurement)", name, src)
    return True


def table_rows_dir(out_dir: str | Path) -> Path:
    """Where `teacher_table` keeps its rows (the module docstring says why not `teacher/` itself)."""
    return Path(out_dir) / "teacher" / "table"


def _row(
    model: str, sampler: str, steps: int, guidance: float, n_images: int, name: str, rows_dir: Path,
    progress: bool, reuse: bool,
) -> dict[str, Any]:  # fmt: skip
    """The row at `rows_dir/name.json` if it measured exactly this, else a new evaluation."""
    row = reusable(rows_dir / f"{name}.json", model, sampler, steps, guidance, n_images) if reuse else None
    if row is not None:
        log.info("%s: reusing the row already measured for these weights and settings", name)
    else:
        row = evaluate(model, sampler, steps, guidance, n_images, name, rows_dir, progress=progress)
    return note_sample_size(row, rows_dir / f"{name}.json")


HEADLINE_IMAGES = 2000  # the image count of the rows the README quotes as results (the served row, the tables)


def note_sample_size(row: dict[str, Any], path: Path) -> dict[str, Any]:
    """A sweep or table row under `HEADLINE_IMAGES` says why, with its own 95% intervals, in the row
    (`interval_note`, as the v1 distillation rows do) and in its file."""
    n = row.get("n_images", HEADLINE_IMAGES)
    if n >= HEADLINE_IMAGES or not row.get("fd_ci"):
        return row
    fd, adh = row["fd_ci"], (row.get("adherence_ci") or {}).get("overall")
    adh_text = f", adherence [{adh[0]:.3f}, {adh[1]:.3f}]" if adh else ""
    row["interval_note"] = (
        f"{n} images, not {HEADLINE_IMAGES:,}: a sweep or table row compares settings (samplers, steps, w) "
        f"and `make results-teacher` measures about 20 of them, 2.5 CPU-hours at {n} a row, 10 at "
        f"{HEADLINE_IMAGES:,}; the served setting is measured at {HEADLINE_IMAGES:,} (README). Bootstrap 95% "
        f"intervals: FD [{fd[0]:.1f}, {fd[1]:.1f}]{adh_text}; rows whose intervals overlap are not separated."
    )
    if path.is_file():
        path.write_text(json.dumps(row, indent=2))
    return row


def sweep_name(sampler: str, steps: int, guidance: float) -> str:
    """A guidance-sweep row's name (and file stem), which also labels rows by their full setting."""
    return f"{sampler}-{steps}-w{guidance:g}"


def _where(rows: list[dict[str, Any]]) -> str:
    """The machine and commit, or each machine with its rows where reused rows come from another."""
    machines = list(dict.fromkeys(r["machine"] for r in rows))
    if len(machines) == 1:
        return f"machine: {machines[0]}, git {rows[0]['git_sha']}"
    parts = [
        f"{m} ({', '.join(sweep_name(r['sampler'], r['steps'], r['guidance']) for r in rows if r['machine'] == m)})"
        for m in machines
    ]
    return "machines: " + "; ".join(parts) + " (s/image compares rows of one machine only)"


def write_table(rows: list[dict[str, Any]], md: Path, png: Path | None, title: str, model: str) -> None:
    r0 = rows[0]
    where = _where(rows)
    text = (
        f"# {title}\n\nModel `{model}`, {r0['n_images']} images per row (fixed prompts and seeds, "
        f"eval seed {r0['eval_seed']}), {where}.\n\n"
        "Adherence is over in-distribution prompts (1 obj / 2 obj split) and, separately, prompts with a "
        "held-out colour-shape pair. FD, KID, precision and recall use the frozen evaluator's features "
        "against renders of the same prompts' scenes. bg TV: total variation distance of the background "
        "distribution where the prompt leaves it free. Brackets: 95% bootstrap intervals over images. Grain: "
        "high-frequency energy on the background, in 8-bit levels (the renders' floor beside it).\n\n"
        + markdown_table(rows)
    )
    md.parent.mkdir(parents=True, exist_ok=True)
    if png is not None:
        png.parent.mkdir(parents=True, exist_ok=True)
        plot_fd_vs_nfe(rows, png)
        text += f"\n![FD against NFE]({png.name})\n"
    md.write_text(text)


def guidance_sweep(
    model: str,
    weights: tuple[float, ...],
    sampler: str,
    steps: int,
    n_images: int,
    out_dir: str | Path = "results",
    progress: bool = True,
    reuse: bool = True,
) -> list[dict[str, Any]]:
    out_dir = Path(out_dir)
    rows = [
        _row(model, sampler, steps, w, n_images, sweep_name(sampler, steps, w), out_dir / "guidance", progress, reuse)
        for w in weights
    ]
    write_table(rows, out_dir / "guidance.md", None, f"Guidance sweep ({sampler}, {steps} steps)", model)
    best = max(rows, key=lambda r: (r["adherence"]["overall"], -r["fd"]))
    (out_dir / "guidance" / "best.json").write_text(json.dumps({"guidance": best["guidance"]}, indent=2))
    return rows
