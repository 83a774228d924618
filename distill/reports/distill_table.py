"""`fewstep eval distill-table`: students against the teacher at equal steps (results/distill.md).

Rows, all in the evaluation schema of `distill.evaluation.evaluate.evaluate` (same prompts, seeds, evaluator):
each packed student at its own K and sampler, the teacher at its best setting, and the teacher
with DDIM and DPM-Solver++ at every K a student has (the training-free solvers at equal steps).
Each student row also carries its training cost (updates, wall time, image network passes, device)
from the packed config. Writes `results/distill.md`, the JSON rows under `results/distill/`,
`results/distill_fd_steps.png` (FD against steps per method) and `results/distill_grid.png` (the
same eight prompts and seeds for every row, side by side). The teacher's best row is its ceiling,
kept in `results/ceiling/` with `fewstep eval ceiling`'s. The table's targets are read from paired
differences (`distill.evaluation.compare`: same prompts and seeds, one bootstrap over images for both sides):
every student against that ceiling, and at each K moment matching (mm-alt) against every other
method, written under `results/distill/paired/` and summarised in `distill.md`.

`fewstep eval distill-guidance` sweeps w for one student against the teacher at the same w
(`results/distill_guidance.md`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.evaluation.compare import Side, compare
from distill.evaluation.evaluate import eval_set, evaluate, evaluate_once, generate, reusable
from distill.evaluation.per_image import PerImage
from distill.kit.checkpoint import load_denoiser, student_info
from distill.kit.text import TextEncoder
from distill.reports import winners
from distill.reports.tables import _fmt, figure_cells

log = logging.getLogger(__name__)

GRID_PROMPTS = 8


def plan_rows(
    students: list[Path], teacher: str, guidance: float, teacher_best: tuple[str, int]
) -> list[dict[str, Any]]:
    """What to evaluate: (label, model, sampler, steps, guidance) per row, students first."""
    plan, ks = [], set()
    for path in students:
        info = student_info(path)
        if info is None:
            raise ValueError(f"{path} is not a distilled student (no 'student' block in its config.json)")
        k = int(info["steps"])
        ks.add(k)
        raw = path.name == "student-raw"  # a run's raw weights beside its EMA (`student/`)
        lo, _, hi = info.get("guidance", [guidance, guidance, guidance])
        # A guidance-conditioned student (distilled for w in [lo, hi]) is scored at the table's w
        # beside the fixed-w ones, under its own row name (`distill.reports.winners` ships it for its method).
        cond = lo != hi
        method = info["method"] + ("-wc" if cond else "")
        plan.append(
            {
                "label": info["method"] + (f" (w {lo:g}-{hi:g})" if cond else "") + (" (raw)" if raw else ""),
                "name": f"{method}-k{k}" + ("-raw" if raw else ""),
                "method": info["method"],
                "conditioned": cond,
                "model": str(path),
                "sampler": info.get("sampler", "ancestral"),
                "steps": k,
                "guidance": guidance,
                "train": info.get("training", {}),
            }
        )
    sampler, steps = teacher_best
    plan.append({"label": f"teacher (best, {sampler})", "model": teacher, "sampler": sampler, "steps": steps})
    for k in sorted(ks):
        plan.append({"label": "teacher ddim", "model": teacher, "sampler": "ddim", "steps": k})
        plan.append({"label": "teacher dpm++2m", "model": teacher, "sampler": "dpmpp-2m", "steps": k})
    for p in plan:
        p.setdefault("guidance", guidance)
        p.setdefault("train", {})
    return plan


def _cost(r: dict[str, Any]) -> str:
    """The training cost cell: the plan's `train` block (a student's packed summary) or, for rows
    that carry it, the row's own `training` record (`distill.evaluation.evaluate.training_record`)."""
    t = r.get("train") or {}
    if t:
        return (
            f"{t['iters']} updates, {t['wall_s'] / 60:.1f} min on {t.get('device', '?')}, "
            f"{t.get('network_forward_images', 0):.2g} image passes"
        )
    t = r.get("training") or {}
    if t.get("updates") is None or r["label"].startswith("teacher"):  # the teacher's own training is no cost here
        return "-"
    minutes = (t.get("wall_s") or 0) / 60
    return f"{t['updates']} updates, {minutes:.1f} min, {t.get('image_passes') or 0:.2g} image passes"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| method | K | sampler | NFE | FD | KID | adherence | 1 obj | 2 obj | held-out | precision | recall "
        "| bg TV | grain | s/image | training |\n" + "|" + " --- |" * 16 + "\n"
    )
    lines = []
    for r in sorted(rows, key=lambda r: (r["steps"], r["label"].startswith("teacher"), r["label"])):
        c = figure_cells(r)
        lines.append(
            f"| {r['label']} | {r['steps']} | {r['sampler']} | {r['nfe']:.0f} | {c['fd']} | {_fmt(r['kid'], 4)} "
            f"| {c['overall']} | {c['one_object']} | {c['two_objects']} | {c['held_out']} "
            f"| {_fmt(r['precision'])} | {_fmt(r['recall'])} | {_fmt(r['free_attribute_tv'].get('background'))} "
            f"| {c['grain']} | {r['seconds_per_image']:.4f} | {_cost(r)} |"
        )
    return head + "\n".join(lines) + "\n"


def plot_fd_steps(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in dict.fromkeys(r["label"] for r in rows):
        pts = sorted((r["steps"], r["fd"]) for r in rows if r["label"] == label)
        style = "--" if label.startswith("teacher") else "-"
        ax.plot([p[0] for p in pts], [p[1] for p in pts], style, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sampling steps K")
    ax.set_ylabel("FD (evaluator features)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def side_by_side(plan: list[dict[str, Any]], out: Path) -> None:
    """One row of the same GRID_PROMPTS prompts and seeds per table row, labelled."""
    from PIL import Image, ImageDraw

    items = eval_set(GRID_PROMPTS)
    strips, labels = [], []
    encoders: dict[str, TextEncoder] = {}
    for p in plan:
        model, cfg = load_denoiser(p["model"])
        key = cfg.text.model_dump_json()
        enc = encoders.setdefault(key, TextEncoder(cfg.text))
        with torch.inference_mode():
            images, _ = generate(model, enc, items, p["sampler"], p["steps"], p["guidance"], progress=False)
        strips.append(np.concatenate(list(images), axis=1))
        labels.append(f"{p['label']} K={p['steps']}")
    scale, pad = 3, 190
    h = strips[0].shape[0] * scale
    canvas = Image.new("RGB", (pad + strips[0].shape[1] * scale, h * len(strips)), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (strip, label) in enumerate(zip(strips, labels, strict=True)):
        img = Image.fromarray(strip).resize((strip.shape[1] * scale, h), Image.NEAREST)
        canvas.paste(img, (pad, i * h))
        draw.text((4, i * h + h // 2 - 6), label, fill="black")
    canvas.save(out)


def _paired_cell(d: dict[str, Any], digits: int) -> str:
    """`+1.2 [-3.0, 5.1]`, with `*` where the paired interval excludes 0."""
    if d.get("diff") is None:
        return "-"
    ci = d["ci"]
    if ci is None:
        return f"{d['diff']:+.{digits}f}"
    sig = " *" if ci[0] > 0 or ci[1] < 0 else ""
    return f"{d['diff']:+.{digits}f} [{ci[0]:+.{digits}f}, {ci[1]:+.{digits}f}]{sig}"


def paired_differences(
    sides: list[tuple[dict[str, Any], Side]], ceiling: Side, reference: str, out_dir: Path
) -> list[dict[str, Any]]:
    """The comparisons the table's targets are read from, each paired on the same prompts and seeds
    (`distill.evaluation.compare`): every student against the teacher's ceiling, at each K the `reference`
    method against every other method (their EMA weights), and each EMA against its run's raw
    weights (`student-raw/`). Writes each under `out_dir` and returns them in order."""
    out_dir.mkdir(parents=True, exist_ok=True)
    found = []
    by_k: dict[int, list[tuple[dict[str, Any], Side]]] = {}
    for p, side in sides:
        by_k.setdefault(p["steps"], []).append((p, side))
    for k in sorted(by_k):
        for p, side in by_k[k]:
            res = compare(ceiling, side, out_dir, f"ceiling-vs-{p['name']}")
            found.append({**res, "k": k, "b_label": p["label"], "a_label": "teacher ceiling"})
        ema = {p["label"]: (p, s) for p, s in by_k[k] if not p["name"].endswith("-raw")}
        if reference in ema:
            rp, rside = ema[reference]
            for label, (p, side) in ema.items():
                if label != reference:
                    res = compare(side, rside, out_dir, f"{p['name']}-vs-{rp['name']}")
                    found.append({**res, "k": k, "b_label": reference, "a_label": label})
        for p, side in by_k[k]:  # each EMA against its own raw weights
            if p["name"].endswith("-raw") and p["label"].removesuffix(" (raw)") in ema:
                ep, eside = ema[p["label"].removesuffix(" (raw)")]
                res = compare(side, eside, out_dir, f"{p['name']}-vs-{ep['name']}")
                found.append({**res, "k": k, "b_label": ep["label"], "a_label": p["label"]})
    return found


def decide_winners(
    sides: list[tuple[dict[str, Any], Side]], found: list[dict[str, Any]], served_row: Path, out_dir: Path
) -> dict[str, Any] | None:
    """`distill.reports.winners.decide` over the table's EMA rows, pairing through the comparisons already
    made (`paired_differences`) and making, and writing, the ones it lacks."""
    ema = {p["name"]: (p, side) for p, side in sides if not p["name"].endswith("-raw")}
    if not ema:
        return None
    done = {(r["a"]["model"], r["b"]["model"]): r for r in found}

    def pair(a: winners.Candidate, b: winners.Candidate) -> dict[str, Any]:
        if (a.model, b.model) in done:
            return done[(a.model, b.model)]
        if (b.model, a.model) in done:  # the comparison made the other way round: B - A = -(A - B)
            return _flipped(done[(b.model, a.model)])
        res = compare(ema[a.name][1], ema[b.name][1], out_dir, f"{a.name}-vs-{b.name}")
        done[(a.model, b.model)] = res
        return res

    candidates = [
        winners.Candidate(
            name=name,
            k=p["steps"],
            fd=side.row["fd"],
            adherence=side.row["adherence"]["overall"],
            one_object=side.row["adherence"]["one_object"],
            model=p["model"],
            model_sha256=side.row["model_sha256"],
            method=p.get("method", ""),
            conditioned=p.get("conditioned", False),
        )
        for name, (p, side) in ema.items()
    ]
    if not served_row.is_file():
        log.warning("%s is missing: the winners are decided, the default model is not", served_row)
        return winners.decide(candidates, pair, teacher_one_object=None)
    teacher = json.loads(served_row.read_text())
    if teacher.get("guidance") != ema[candidates[0].name][1].row.get("guidance"):
        log.warning("%s is at another w than the table: the one-object floor mixes two guidance scales", served_row)
    return winners.decide(candidates, pair, teacher_one_object=teacher["adherence"]["one_object"])


def _flipped(res: dict[str, Any]) -> dict[str, Any]:
    """A paired comparison B - A turned into A - B (differences and intervals negated)."""

    def flip(d: Any) -> Any:
        if isinstance(d, dict) and "diff" in d:
            ci = d.get("ci")
            diff = d["diff"]
            return {
                "a": d.get("b"), "b": d.get("a"), "diff": None if diff is None else -diff,
                "ci": None if ci is None else [-ci[1], -ci[0]],
            }  # fmt: skip
        if isinstance(d, dict):
            return {k: flip(v) for k, v in d.items()}
        return d

    figures = {k: v for k, v in res.items() if k in ("fd", "kid", "grain", "adherence")}
    return {**flip(figures), "a": res["b"], "b": res["a"]}


def paired_markdown(
    found: list[dict[str, Any]], ceiling_label: str, where: str | Path = "results/distill/paired"
) -> str:
    head = (
        "\n## Paired differences\n\n"
        f"B - A on the same prompts and seeds, with 95% paired bootstrap intervals over images (`*`: the "
        f"interval excludes 0). Lower FD and grain are better, higher adherence is. The teacher ceiling is "
        f"{ceiling_label}. Each comparison is also under `{Path(where).as_posix()}/`.\n\n"
        "| K | B | A | FD | adherence | 1 obj | 2 obj | grain |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for r in found:
        adh = r["adherence"]
        lines.append(
            f"| {r['k']} | {r['b_label']} | {r['a_label']} | {_paired_cell(r['fd'], 1)} "
            f"| {_paired_cell(adh['overall'], 3)} "
            f"| {_paired_cell(adh.get('one_object', {}), 3)} | {_paired_cell(adh.get('two_objects', {}), 3)} "
            f"| {_paired_cell(r['grain'], 2)} |"
        )
    return head + "\n".join(lines) + "\n"


def distill_table(
    students: list[Path],
    teacher: str,
    guidance: float,
    n_images: int,
    out_dir: str | Path = "results",
    teacher_best: tuple[str, int] = ("ancestral", 64),
    progress: bool = True,
    reuse: bool = True,
    ceiling_dir: str | Path | None = None,
    reference: str = "mm-alt",
    served_row: str | Path | None = None,
    regenerate: str = "make results-distill",
) -> list[dict[str, Any]]:
    """Evaluate every planned row (reusing, with `reuse`, rows already written for the same weights
    and settings) and write the table, the paired differences, the plot and the side-by-side grid.

    The teacher's best row is the ceiling shared with `fewstep eval ceiling` and `fewstep eval
    compare` (`distill.evaluation.evaluate.evaluate_once` in `ceiling_dir`, `out_dir/ceiling` by default): a
    64-step row costs the better part of an hour on a CPU, so it has one home and is computed once.

    Then the decision of which students ship (`distill.reports.winners`: each K's winner and the default
    model), written to `out_dir/distill_winners.json` and as a section of the table; `served_row` is
    the teacher's row at its served setting (default `out_dir/teacher/ancestral-16.json`), the
    default model's one-object floor. Without it the winners are written and the default is not."""
    out_dir = Path(out_dir)
    ceiling_dir = Path(ceiling_dir) if ceiling_dir is not None else out_dir / "ceiling"
    rows_dir = out_dir / "distill"
    plan = plan_rows(students, teacher, guidance, teacher_best)
    rows, sides, ceiling = [], [], None
    for p in plan:
        args = (p["model"], p["sampler"], p["steps"], p["guidance"], n_images)
        if p["label"].startswith("teacher (best"):
            row = evaluate_once(*args, ceiling_dir, progress=progress, reuse=reuse)
            ceiling = Side(row["name"], row, PerImage.load(ceiling_dir / row["per_image"]))
            row = {**row, "label": p["label"], "train": p["train"]}  # the shared row file stays as it is
        else:
            name = p.get("name") or f"{p['label'].split()[0]}-{p['sampler']}-{p['steps']}"
            row = reusable(rows_dir / f"{name}.json", *args, need_per_image=True) if reuse else None
            if row is not None:
                log.info("%s: reusing the row already measured for these weights and settings", name)
            else:
                row = evaluate(*args, name, rows_dir, progress=progress)
            row.update(label=p["label"], train=p["train"])
            (rows_dir / f"{name}.json").write_text(json.dumps(row, indent=2))
            if not p["label"].startswith("teacher"):
                sides.append((p, Side(p["label"], row, PerImage.load(rows_dir / row["per_image"]))))
        rows.append(row)
        log.info("%s K=%d: FD %.1f adherence %.3f", p["label"], p["steps"], row["fd"], row["adherence"]["overall"])
        _write_table(rows, guidance, out_dir, regenerate=regenerate)
    assert ceiling is not None  # plan_rows always plans the teacher's best row
    found = paired_differences(sides, ceiling, reference, rows_dir / "paired")
    sampler, steps = teacher_best
    section = paired_markdown(found, f"the teacher with {steps} {sampler} steps", rows_dir / "paired")
    served = Path(served_row) if served_row is not None else out_dir / "teacher" / "ancestral-16.json"
    decision = decide_winners(sides, found, served, rows_dir / "paired")
    if decision is not None:
        winners.write(decision, out_dir)
        section += winners.markdown(decision)
    _write_table(rows, guidance, out_dir, section, regenerate)
    side_by_side(plan, out_dir / "distill_grid.png")
    return rows


def _write_table(
    rows: list[dict[str, Any]],
    guidance: float,
    out_dir: Path,
    paired: str = "",
    regenerate: str = "make results-distill",
) -> None:
    """`distill.md` and its plot, rewritten after every row so that a long table shows its progress."""
    r0 = rows[0]
    text = (
        f"# Distilled students against the teacher\n\n{r0['n_images']} images per row (fixed prompts and "
        f"seeds, eval seed {r0['eval_seed']}), guidance w = {guidance:g} for every row, machine: "
        f"{r0['machine']}, git {r0['git_sha']}. Regenerate: `{regenerate}`.\n\n" + markdown(rows) + paired
    )
    text += "\n![FD against steps](distill_fd_steps.png)\n\n![same prompts and seeds](distill_grid.png)\n"
    (out_dir / "distill.md").write_text(text)
    plot_fd_steps(rows, out_dir / "distill_fd_steps.png")


def guidance_compare(
    student: Path,
    teacher: str,
    weights: tuple[float, ...],
    teacher_steps: tuple[int, ...],
    n_images: int,
    out_dir: str | Path = "results",
    progress: bool = True,
    reuse: bool = True,
) -> list[dict[str, Any]]:
    """One guidance-conditioned student against the teacher at the same w (`results/distill_guidance.md`).

    The student serves every w of its training range with one network evaluation per step; the
    teacher pays two (conditional and unconditional) at each of `teacher_steps` ancestral steps."""
    out_dir = Path(out_dir)
    rows_dir = out_dir / "distill_guidance"
    info = student_info(student)
    if info is None:
        raise ValueError(f"{student} is not a distilled student (no 'student' block in its config.json)")
    k, sampler = int(info["steps"]), info.get("sampler", "ancestral")
    plan = [(f"{info['method']} K={k}", str(student), sampler, k, f"{info['method']}-k{k}")]
    plan += [(f"teacher ancestral {n}", teacher, "ancestral", n, f"teacher-ancestral-{n}") for n in teacher_steps]
    rows = []
    for w in weights:
        for label, model, smp, steps, stem in plan:
            name = f"{stem}-w{w:g}"
            args = (model, smp, steps, w, n_images)
            row = reusable(rows_dir / f"{name}.json", *args) if reuse else None
            if row is None:
                row = evaluate(*args, name, rows_dir, progress=progress)
            row["label"] = label
            rows.append(row)
            log.info("w=%g %s: FD %.1f adherence %.3f", w, label, row["fd"], row["adherence"]["overall"])
    head = (
        "| w | model | NFE | FD | KID | adherence | 1 obj | 2 obj | held-out | precision | recall | bg TV "
        "| grain | s/image |\n" + "|" + " --- |" * 14 + "\n"
    )
    lines = [
        f"| {r['guidance']:g} | {r['label']} | {r['nfe']:.0f} | {c['fd']} | {_fmt(r['kid'], 4)} "
        f"| {c['overall']} | {c['one_object']} | {c['two_objects']} | {c['held_out']} | {_fmt(r['precision'])} "
        f"| {_fmt(r['recall'])} | {_fmt(r['free_attribute_tv'].get('background'))} | {c['grain']} "
        f"| {r['seconds_per_image']:.4f} |"
        for r in rows
        for c in (figure_cells(r),)
    ]
    lo, _, hi = info.get("guidance", [None, None, None])
    r0 = rows[0]
    text = (
        f"# Guidance sweep: `{student}` against the teacher at the same w\n\n"
        f"The student was distilled for w in [{lo}, {hi}] (one network evaluation per step at any w); the "
        f"teacher uses classifier-free guidance (two per step). {r0['n_images']} images per row, eval seed "
        f"{r0['eval_seed']}, machine: {r0['machine']}, git {r0['git_sha']}. Regenerate: "
        f"`fewstep eval distill-guidance --student {student} --weights {' '.join(f'{w:g}' for w in weights)} "
        f"--teacher-steps {' '.join(map(str, teacher_steps))} --n-images {n_images}`.\n\n"
    )
    text += head + "\n".join(lines) + "\n"
    (out_dir / "distill_guidance.md").write_text(text)
    return rows
