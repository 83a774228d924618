"""`results/methods.md`: every distillation method at K = 1, 2, 4, 8 (where it applies) at equal
training image passes, from `scripts/methods_table.sh`'s evaluated rows.

Per row: training image passes and updates, cost per generated image (network evaluations and
milliseconds on the machine that evaluated), FD and KID with their intervals, adherence overall,
one- and two-object by the learned evaluator and by the second, independent judge
(`distill.evaluation.analytic`), and grain. Then paired 95% intervals (the same prompts and seeds:
`distill.evaluation.compare.paired`) against the teacher's 64-step ceiling and against mm-alt at
the same K, on FD, both judges' adherence and grain; and each K's winner by the project's rule
(`distill.reports.winners.pick_winner`: undominated on resolved FD and adherence differences, then
the highest adherence). Plots: quality against K per method (`methods_steps.png`) and, with
`--grid`, one strip of the same prompts and seeds per row (`methods_grid.png`,
`distill.reports.distill_table.side_by_side`).

Input layout (`RUN_DIR/eval/`): `<method>-k<K>.json` rows of `fewstep eval --analytic` with their
sidecars (`.npz`, `.analytic.npz`), `<method>-k<K>.summary.json` (the run's summary: training
cost), and `ceiling.json`, the teacher's 64-step row at the same w, evaluated the same way.

    python -m distill.reports.methods runs/methods results/methods.md [--grid]
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.evaluation.bootstrap import mean_resampled, percentile_interval, resample_counts
from distill.evaluation.compare import paired
from distill.evaluation.per_image import PerImage, check_paired
from distill.kit.plots import panel_figure
from distill.reports import winners
from distill.reports.distill_table import _flipped, _paired_cell
from distill.reports.tables import _fmt, _fmt_ci

log = logging.getLogger(__name__)

ROW = re.compile(r"^(?P<method>[a-z0-9-]+?)-k(?P<k>\d+)$")
CEILING = "ceiling"
REFERENCE = "mm-alt"
METHOD_ORDER = ("mm-alt", "mm-param", "pd", "cd", "shortcut", "add", "emd", "pso")


@dataclass(frozen=True)
class Row:
    """One evaluated row: its name, method, K, the row itself, its run's summary and sidecars."""

    name: str
    method: str
    k: int
    row: dict[str, Any]
    summary: dict[str, Any]
    path: Path

    def record(self, judge: str = "evaluator") -> PerImage | None:
        """The per-image record behind the row, by the evaluator or by the analytic judge (None: not there)."""
        sidecar = self.path.with_suffix(".npz") if judge == "evaluator" else self.path.with_suffix(".analytic.npz")
        return PerImage.load(sidecar) if sidecar.is_file() else None


def load_rows(run_dir: Path) -> tuple[list[Row], Row | None]:
    """(the method rows in table order, the ceiling row or None) from `run_dir/eval`."""
    rows, ceiling = [], None
    for path in sorted((run_dir / "eval").glob("*.json")):
        if path.name.endswith(".summary.json"):
            continue
        row = json.loads(path.read_text())
        summary_path = path.with_name(f"{path.stem}.summary.json")
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
        if path.stem == CEILING:
            ceiling = Row(CEILING, "teacher", int(row["steps"]), row, summary, path)
            continue
        m = ROW.match(path.stem)
        if m is None:
            log.warning("%s: not a <method>-k<K> row; left out", path)
            continue
        rows.append(Row(path.stem, m["method"], int(m["k"]), row, summary, path))
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    rows.sort(key=lambda r: (r.k, order.get(r.method, len(order)), r.method))
    return rows, ceiling


def _adh(r: dict[str, Any], key: str) -> str:
    a, ci = r.get(key) or {}, r.get(f"{key}_ci") or {}
    if not a:
        return "- | - | -"
    return (
        f"{_fmt_ci(a.get('overall'), ci.get('overall'))} | {_fmt(a.get('one_object'))} | {_fmt(a.get('two_objects'))}"
    )


def _training(s: dict[str, Any]) -> str:
    if not s:
        return "- | -"
    passes = s.get("image_passes")
    return f"{passes if passes is not None else '-'} | {s.get('iters', '-')}"


def figures_line(r: Row) -> str:
    x = r.row
    kid_ci = [1e3 * v for v in x["kid_ci"]] if x.get("kid_ci") else None
    return (
        f"| {r.method} | {r.k} | {_training(r.summary)} | {_fmt(x.get('nfe'), 0)} | "
        f"{_fmt(1e3 * x['seconds_per_image'], 1) if x.get('seconds_per_image') is not None else '-'} "
        f"| {_fmt_ci(x['fd'], x.get('fd_ci'), 1)} | {_fmt_ci(1e3 * x['kid'], kid_ci, 2)} "
        f"| {_adh(x, 'adherence')} | {_adh(x, 'adherence_analytic')} "
        f"| {_fmt_ci(x.get('grain'), x.get('grain_ci'), 2)} |"
    )


def compare_rows(a: Row, b: Row) -> dict[str, Any]:
    """B - A, paired: FD, grain and the evaluator's adherence, and the analytic judge's adherence
    (`analytic`, None when either row lacks its sidecar)."""
    ra, rb = a.record(), b.record()
    if ra is None or rb is None:
        raise FileNotFoundError(f"{a.name} or {b.name}: no per-image sidecar (re-run fewstep eval)")
    out = paired(ra, rb)
    aa, ab = a.record("analytic"), b.record("analytic")
    out["analytic"] = paired_adherence(aa, ab) if aa is not None and ab is not None else None
    return out


def paired_adherence(a: PerImage, b: PerImage) -> dict[str, Any]:
    """B - A of overall adherence with its paired 95% interval (the resampling of
    `distill.evaluation.compare.paired`, without the feature distances the analytic judge does not
    change: its sidecar holds the evaluator's features)."""
    check_paired(a, b)
    counts = resample_counts(a.n)
    (_, mask, c) = next(g for g in a.adherence_groups() if g[0] == ("overall",))
    if not mask.any():
        return {"overall": {"diff": None, "ci": None}}
    va, vb = mean_resampled(counts, a.checks[:, c], mask), mean_resampled(counts, b.checks[:, c], mask)
    diff = float(b.checks[mask, c].mean() - a.checks[mask, c].mean())
    return {"overall": {"a": float(a.checks[mask, c].mean()), "b": float(b.checks[mask, c].mean()), "diff": diff,
                        "ci": percentile_interval(vb - va)}}  # fmt: skip


def _paired_cells(c: dict[str, Any]) -> str:
    analytic = c.get("analytic") or {}
    return (
        f"{_paired_cell(c['fd'], 1)} | {_paired_cell(c['adherence']['overall'], 3)} "
        f"| {_paired_cell(analytic.get('overall', {}), 3)} | {_paired_cell(c['grain'], 2)}"
    )


def pick_winners(rows: list[Row], pairs: dict[tuple[str, str], dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Each K's winner by the project's rule (`winners.pick_winner`) over that K's rows, on the
    learned evaluator's figures (the rule's own), pairing through `pairs` (filled as needed)."""
    by_name = {r.name: r for r in rows}

    def pair(a: winners.Candidate, b: winners.Candidate) -> dict[str, Any]:
        if (a.name, b.name) not in pairs:
            if (b.name, a.name) in pairs:  # made the other way round: B - A = -(A - B)
                pairs[(a.name, b.name)] = _flipped({**pairs[(b.name, a.name)], "a": b.name, "b": a.name})
            else:
                pairs[(a.name, b.name)] = compare_rows(by_name[a.name], by_name[b.name])
        return pairs[(a.name, b.name)]

    out = {}
    for k in sorted({r.k for r in rows}):
        cands = [
            winners.Candidate(
                name=r.name,
                k=k,
                fd=r.row["fd"],
                adherence=r.row["adherence"]["overall"],
                one_object=r.row["adherence"]["one_object"],
                model=r.row.get("model", r.name),
                model_sha256=r.row.get("model_sha256", ""),
                method=r.method,
            )
            for r in rows
            if r.k == k
        ]
        best, beaten = winners.pick_winner(cands, pair)
        out[k] = {"winner": best.name, "method": best.method, "dominated_by": beaten}
    return out


def methods_markdown(run_dir: Path) -> tuple[str, dict[int, dict[str, Any]]]:
    """The page and the winners per K."""
    rows, ceiling = load_rows(run_dir)
    if not rows:
        raise FileNotFoundError(f"{run_dir}/eval: no <method>-k<K>.json rows")
    head = (
        "| method | K | training image passes | updates | NFE / image | ms / image | FD | KID x 1e3 "
        "| adherence (evaluator) | 1 obj | 2 obj | adherence (analytic judge) | 1 obj | 2 obj | grain |\n"
        + "|" + " --- |" * 15
    )  # fmt: skip
    lines = [head]
    if ceiling is not None:
        lines.append(figures_line(ceiling).replace("| teacher | ", f"| teacher ceiling ({ceiling.k} steps) | ", 1))
    lines += [figures_line(r) for r in rows]
    pairs: dict[tuple[str, str], dict[str, Any]] = {}
    vs = [
        "| K | B | A | FD | adherence (evaluator) | adherence (analytic judge) | grain |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if ceiling is not None and ceiling.record() is not None:
            c = compare_rows(ceiling, r)
            vs.append(f"| {r.k} | {r.method} | teacher ceiling | {_paired_cells(c)} |")
    refs = {r.k: r for r in rows if r.method == REFERENCE}
    for r in rows:
        ref = refs.get(r.k)
        if ref is not None and r is not ref:
            c = compare_rows(ref, r)
            pairs[(ref.name, r.name)] = c
            vs.append(f"| {r.k} | {r.method} | {REFERENCE} | {_paired_cells(c)} |")
    won = pick_winners(rows, pairs)
    win_lines = ["| K | winner | dominated (by) |", "| --- | --- | --- |"]
    for k, w in won.items():
        beaten = "; ".join(f"{n} ({', '.join(by)})" for n, by in w["dominated_by"].items() if by) or "none"
        win_lines.append(f"| {k} | {w['method']} | {beaten} |")
    r0 = rows[0].row
    text = (
        "# Distillation methods at equal training image passes\n\n"
        "Every method distils the same teacher (`scripts/methods_table.sh`: the same budget of training images "
        "per run, `--budget-images`; served form, conditioned on w in [1, 5]; EMA 0.99), evaluated on "
        f"{r0['n_images']} images (eval seed {r0['eval_seed']}) at w = {r0['guidance']:g} with its own K-step "
        "sampler. Adherence is read by two judges: the learned evaluator and the analytic judge "
        "(`distill.evaluation.analytic`, a classical reader written from the shapes world's specification; "
        "its accuracy on each row's renders is in the row's `analytic_reader_accuracy`). pso is preference "
        "tuning on top of the best student at its K, judged by the evaluator: its gain counts only where the "
        "analytic judge sees it too. Cost per image is measured where the rows were evaluated; "
        f"machine: {r0.get('machine', '?')}.\n\n"
        + "\n".join(lines)
        + "\n\n## Paired differences\n\nB - A on the same prompts and seeds, 95% paired bootstrap intervals over "
        "images (`*`: the interval excludes 0). Lower FD and grain are better, higher adherence is.\n\n"
        + "\n".join(vs)
        + "\n\n## Winner at each K\n\nBy the project's rule (`distill/reports/winners.py`): a method is dominated "
        "when another is better on FD or the evaluator's adherence by a resolved paired difference and worse on "
        "neither; among the undominated, the highest adherence wins.\n\n"
        + "\n".join(win_lines)
        + "\n\nRegenerate: `make results-methods` (`scripts/methods_table.sh`, then "
        "`python -m distill.reports.methods runs/methods results/methods.md --grid`). Plots: `methods_steps.png`"
        + (", `methods_grid.png`" if (run_dir / "methods_grid.png").is_file() else "")
        + ".\n"
    )
    return text, won


def plot_steps(rows: list[Row], ceiling: Row | None, png: Path) -> None:
    """FD and both judges' adherence against K, one line per method, the ceiling dashed."""
    panels = [
        ("FD", lambda x: x.get("fd")),
        ("adherence (evaluator)", lambda x: (x.get("adherence") or {}).get("overall")),
        ("adherence (analytic judge)", lambda x: (x.get("adherence_analytic") or {}).get("overall")),
    ]
    with panel_figure(png, "sampling steps K", [label for label, _ in panels]) as axes:
        for ax, (_, value) in zip(axes, panels, strict=True):
            for method in dict.fromkeys(r.method for r in rows):
                pts = sorted((r.k, value(r.row)) for r in rows if r.method == method and value(r.row) is not None)
                if pts:
                    ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
            if ceiling is not None and value(ceiling.row) is not None:
                ax.axhline(value(ceiling.row), color="black", linestyle="--", label=f"teacher ({ceiling.k} steps)")
            ax.set_xscale("log", base=2)


def sample_grid(rows: list[Row], png: Path) -> None:
    """One strip of the same prompts and seeds per row (each model at its K, its sampler, the rows' w)."""
    from distill.kit.checkpoint import student_info
    from distill.reports.distill_table import side_by_side

    plan = []
    for r in rows:
        info = student_info(r.row["model"]) or {}
        plan.append({"model": r.row["model"], "sampler": r.row.get("sampler", info.get("sampler", "ancestral")),
                     "steps": r.k, "guidance": r.row["guidance"], "label": r.method})  # fmt: skip
    side_by_side(plan, png)


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m distill.reports.methods", description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path, help="scripts/methods_table.sh's OUT (holds eval/)")
    ap.add_argument("markdown", type=Path, help="the page to write (results/methods.md)")
    ap.add_argument("--grid", action="store_true", help="also sample methods_grid.png from every row's model")
    ap.add_argument("--winners", action="store_true", help="print each K's winning row name (for the pso step) only")
    args = ap.parse_args(argv)
    rows, ceiling = load_rows(args.run_dir)
    if args.winners:  # only the comparisons the rule needs
        for k, w in pick_winners(rows, {}).items():
            print(k, w["winner"])
        return 0
    text, won = methods_markdown(args.run_dir)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    out = args.markdown.with_suffix("")
    out.mkdir(exist_ok=True)
    plot_steps(rows, ceiling, out / "methods_steps.png")
    if args.grid:
        sample_grid(rows, out / "methods_grid.png")
    args.markdown.write_text(text.replace("`methods_steps.png`", f"`{out.name}/methods_steps.png`"))
    (out / "winners.json").write_text(json.dumps({str(k): v for k, v in won.items()}, indent=2))
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    sys.exit(main(sys.argv[1:]))
