"""`results/mm_ablation.md` from the runs of `scripts/mm_ablation.sh`: one row per short mm-alt run,
what it changed against the base settings, its updates and its evaluation figures, beside the
student's starting point (the teacher at w = 1 with the same 8 steps). With `--length`,
`results/mm_length.md` and its plot from `scripts/mm_length.sh`: the same figures along each run's
training length (rows named `<run>-it<updates>`).

    python -m distill.reports.ablation runs/ablation results/mm_ablation.md
    python -m distill.reports.ablation --length runs/length results/mm_length.md
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from distill.reports.tables import _fmt, _fmt_ci

SHOWN = ("batch_size", "lr", "aux_lr", "aux_steps", "weighting", "aux_weighting", "time_sampling", "ema_decay",
         "guidance_min", "guidance_max")  # fmt: skip


def _settings(run: Path) -> dict[str, Any]:
    cfg = json.loads((run / "config.json").read_text())
    return {k: cfg.get(k) for k in SHOWN}


def _paired(compare_dir: Path | None, name: str) -> str:
    """`FD diff [CI] | adherence diff [CI]` of `name` against the base run on the same prompts and seeds
    (`fewstep eval compare`), or dashes where that comparison was not made."""
    path = compare_dir / f"base-vs-{name}.json" if compare_dir else None
    if path is None or not path.is_file():
        return "- | -"
    c = json.loads(path.read_text())
    fd, adh = c["fd"], c["adherence"]["overall"]

    def diff(d: dict[str, Any], digits: int) -> str:
        if d.get("diff") is None:
            return "-"
        lo, hi = d["ci"]
        return f"{d['diff']:+.{digits}f} [{lo:+.{digits}f}, {hi:+.{digits}f}]"

    return f"{diff(fd, 1)} | {diff(adh, 3)}"


def ablation_markdown(out: Path, compare_dir: Path | None = None) -> str:
    """One row per run of `scripts/mm_ablation.sh` (the settings it differs in, its updates, its
    figures with 95% intervals and, where `compare_dir` holds them, its paired differences from the
    `base` run), after the starting point."""
    rows = {p.stem: json.loads(p.read_text()) for p in sorted((out / "eval").glob("*.json"))}
    if "init" not in rows:
        raise FileNotFoundError(f"{out}/eval/init.json: the starting point row is missing")
    lines = [
        "| run | batch | lr (student / aux) | aux steps | weighting | aux weighting | (s, t) draws | EMA | w range "
        "| updates | eval w | FD | adherence | 1 obj | 2 obj | precision | recall | FD - base (paired) "
        "| adherence - base (paired) |",
        "|" + " --- |" * 19,
    ]
    init = rows.pop("init")
    a = init["adherence"]
    lines.append(
        f"| start (teacher w = {init['guidance']:g}, 8 ancestral steps) |" + " - |" * 8 + " 0 | "
        f"{init['guidance']:g} | {_fmt_ci(init['fd'], init.get('fd_ci'), 1)} | {_fmt(a['overall'])} "
        f"| {_fmt(a['one_object'])} | {_fmt(a['two_objects'])} | {_fmt(init['precision'])} | {_fmt(init['recall'])} "
        "| - | - |"
    )
    for name, r in sorted(rows.items(), key=lambda kv: kv[0] != "base"):
        s = _settings(out / name)
        summary = json.loads((out / name / "summary.json").read_text())
        a = r["adherence"]
        lines.append(
            f"| {name} | {s['batch_size']} | {s['lr']:g} / {s['aux_lr'] or s['lr']:g} | {s['aux_steps']} "
            f"| {s['weighting']} | {s['aux_weighting'] or 'none'} | {s['time_sampling'] or 'uniform'} "
            f"| {s['ema_decay'] or 0:g} | [{s['guidance_min']:g}, {s['guidance_max']:g}] "
            f"| {summary['iters']} | {r['guidance']:g} | {_fmt_ci(r['fd'], r.get('fd_ci'), 1)} "
            f"| {_fmt_ci(a['overall'], r.get('adherence_ci', {}).get('overall'))} "
            f"| {_fmt(a['one_object'])} | {_fmt(a['two_objects'])} | {_fmt(r['precision'])} | {_fmt(r['recall'])} "
            f"| {'- | -' if name == 'base' else _paired(compare_dir, name)} |"
        )
    r0 = init
    head = (
        "# mm-alt ablation at K = 8\n\n"
        "Each run: `fewstep distill --method mm-alt --steps 8` from `models/teacher` on one CPU thread (two "
        "runs side by side) for the updates shown, changing one setting against `base`; then "
        f"{r0['n_images']} images (eval seed {r0['eval_seed']}) with the 8-step sampler at the w shown, and a "
        "paired comparison with `base` on the same prompts and seeds (95% bootstrap intervals; a difference "
        f"whose interval excludes 0 is resolved). Machine: {r0['machine']}. Regenerate: "
        "`scripts/mm_ablation.sh`.\n\n"
    )
    return head + "\n".join(lines) + "\n"


SLICE = re.compile(r"^(?P<run>.+)-it(?P<updates>\d+)$")
TEACHER_BEST = Path("results/distill_v1/teacher-ancestral-64.json")  # mm_length.md is the v1 teacher's study


def _row_cells(r: dict[str, Any]) -> str:
    a = r["adherence"]
    return (
        f"{r['guidance']:g} | {_fmt_ci(r['fd'], r.get('fd_ci'), 1)} | {_fmt(a['overall'])} | {_fmt(a['one_object'])} "
        f"| {_fmt(a['two_objects'])} | {_fmt(r['precision'])} | {_fmt(r['recall'])} "
        f"| {_fmt(r['free_attribute_tv'].get('background'))} |"
    )


def length_rows(out: Path) -> dict[str, list[tuple[int, float, dict[str, Any]]]]:
    """Per run, its evaluated slices as (updates, cumulative training seconds, row), by updates."""
    runs: dict[str, list[tuple[int, float, dict[str, Any]]]] = {}
    for p in sorted((out / "eval").glob("*.json")):
        m = SLICE.match(p.stem)
        if m is None:
            continue
        summary = json.loads(p.with_suffix(".summary").read_text())
        if summary["iters"] != int(m["updates"]):
            raise ValueError(f"{p}: named after {m['updates']} updates but its run stopped at {summary['iters']}")
        runs.setdefault(m["run"], []).append((summary["iters"], summary["wall_s"], json.loads(p.read_text())))
    if not runs:
        raise FileNotFoundError(f"{out}/eval: no <run>-it<updates>.json rows")
    return {k: sorted(v, key=lambda x: x[0]) for k, v in runs.items()}


def _starts(out: Path) -> list[dict[str, Any]]:
    """The starting points (the teacher at w = 1 with each run's K): eval/init.json (K = 8, shared
    with the ablation) and eval/init-k<K>.json, by K."""
    rows = [json.loads(p.read_text()) for p in sorted((out / "eval").glob("init*.json"))]
    if not rows:
        raise FileNotFoundError(f"{out}/eval/init.json: the starting point row is missing")
    return sorted(rows, key=lambda r: r["steps"])


def length_markdown(out: Path, teacher_best: Path = TEACHER_BEST) -> str:
    """The learning-curve table: each run's figures after each slice, with the starts and the
    teacher's best row (the issue's targets are relative to it) as references."""
    runs = length_rows(out)
    lines = [
        "| run | K | w range | updates | training minutes | eval w | FD | adherence | 1 obj | 2 obj | precision "
        "| recall | bg TV |",
        "|" + " --- |" * 13,
    ]
    for init in _starts(out):
        k = init["steps"]
        lines.append(f"| start (teacher w = 1, {k} ancestral steps) | {k} | - | 0 | 0 | {_row_cells(init)}")
    if teacher_best.is_file():
        t = json.loads(teacher_best.read_text())
        lines.append(f"| teacher best ({t['sampler']}, {t['steps']} steps) | - | - | - | - | {_row_cells(t)}")
    for name, slices in runs.items():
        s = _settings(out / name)
        for updates, wall_s, r in slices:
            lines.append(
                f"| {name} | {r['steps']} | [{s['guidance_min']:g}, {s['guidance_max']:g}] | {updates} "
                f"| {wall_s / 60:.1f} | {_row_cells(r)}"
            )
    r0 = next(iter(runs.values()))[0][2]
    head = (
        "# mm-alt training length\n\n"
        "Each run: `fewstep distill --method mm-alt` from `models/teacher` at batch 32, resumed in slices on one "
        "CPU thread (two runs side by side); after each slice the student is packed and evaluated on "
        f"{r0['n_images']} images (eval seed {r0['eval_seed']}) with its K-step ancestral sampler at the w shown. "
        f"Machine: {r0['machine']}. Plot: `mm_length.png`. Regenerate: `scripts/mm_length.sh`.\n\n"
    )
    return head + "\n".join(lines) + "\n"


def plot_length(out: Path, png: Path, teacher_best: Path = TEACHER_BEST) -> None:
    """FD against updates per run (from its start at 0), with the teacher's best as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = length_rows(out)
    starts = {r["steps"]: r["fd"] for r in _starts(out)}
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, slices in runs.items():
        first = slices[0][2]
        ax.plot(
            [0] + [u for u, _, _ in slices],
            [starts.get(first["steps"], float("nan"))] + [r["fd"] for _, _, r in slices],
            marker="o",
            label=f"{name} (K = {first['steps']}, eval w = {first['guidance']:g})",
        )
    if teacher_best.is_file():
        t = json.loads(teacher_best.read_text())
        ax.axhline(t["fd"], color="black", linestyle="--", label=f"teacher best ({t['steps']} steps)")
    ax.set_xlabel("student updates (batch 32); 0 = the start, the teacher at w = 1 with K steps")
    ax.set_ylabel("FD (evaluator features)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)


def main(argv: list[str]) -> int:
    if argv and argv[0] == "--length":
        out, md = Path(argv[1]), Path(argv[2])
        md.write_text(length_markdown(out))
        plot_length(out, md.with_suffix(".png"))
        return 0
    out, md = Path(argv[0]), Path(argv[1])
    md.write_text(ablation_markdown(out, md.with_suffix("")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
