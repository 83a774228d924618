"""`fewstep eval` and its actions that measure: compare, ceiling, train-evaluator, table, guidance."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _eval(args: argparse.Namespace) -> int:
    if args.model is None:
        raise ValueError("--model is required (or use `fewstep eval train-evaluator`)")
    import torch

    from distill.evaluation.evaluate import evaluate, reusable
    from distill.kit.checkpoint import student_info

    if args.threads:
        torch.set_num_threads(args.threads)
    # A student samples with what it was distilled for unless told otherwise: a pd student under the
    # ancestral sampler, or an mm student under DDIM, measures a model nobody serves.
    own = student_info(args.model) or {}
    sampler = args.sampler or own.get("sampler", "ancestral")
    steps = args.steps or int(own.get("steps", 32))
    name = args.name or f"{Path(args.model).name}-{sampler}-{steps}-w{args.guidance:g}"
    settings = (args.model, sampler, steps, args.guidance, args.n_images)
    # The row already there is kept if it measured exactly this (weights, evaluator, settings, prompt
    # set, bootstrap) and has its per-image sidecar: a 16-step teacher row is ten minutes of CPU.
    row = None if args.fresh else reusable(Path(args.out_dir) / f"{name}.json", *settings, args.evaluator, True)
    if row is not None and (row.get("bootstrap") or {}).get("resamples", 0) != args.resamples:
        row = None
    if row is not None and args.analytic and "adherence_analytic" not in row:
        row = None  # the second judge reads the images, which a row does not keep
    if row is not None:
        log.info("%s: reusing the row already measured for these weights and settings (--fresh re-measures)", name)
    else:
        row = evaluate(
            *settings, name, args.out_dir, args.evaluator, args.batch_size,
            progress=not args.no_progress, resamples=args.resamples, analytic=args.analytic,
        )  # fmt: skip
    a, ci = row["adherence"], row.get("adherence_ci", {})

    def with_ci(v: float | None, interval: list[float] | None, digits: int = 3) -> str:
        text = "-" if v is None else f"{v:.{digits}f}"
        return text + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")

    log.info(
        "%s: FD %s KID %s grain %s (renders %s) precision %.3f recall %.3f adherence %s (1 obj %s, 2 obj %s, "
        "held-out %s), %.1f ms/image",
        row["name"], with_ci(row["fd"], row.get("fd_ci"), 1), with_ci(row["kid"], row.get("kid_ci"), 4),
        with_ci(row.get("grain"), row.get("grain_ci"), 2), with_ci(row.get("grain_reference"), None, 2),
        row["precision"], row["recall"], with_ci(a["overall"], ci.get("overall")),
        with_ci(a["one_object"], ci.get("one_object")), with_ci(a["two_objects"], ci.get("two_objects")),
        with_ci(a["held_out"], ci.get("held_out")), 1000 * row["seconds_per_image"],
    )  # fmt: skip
    if "adherence_analytic" in row:
        a2, ci2 = row["adherence_analytic"], row.get("adherence_analytic_ci", {})
        log.info(
            "%s: adherence by the analytic judge %s (1 obj %s, 2 obj %s); its scene accuracy on the renders %.3f",
            row["name"], with_ci(a2["overall"], ci2.get("overall")), with_ci(a2["one_object"], ci2.get("one_object")),
            with_ci(a2["two_objects"], ci2.get("two_objects")), row["analytic_reader_accuracy"]["scene"],
        )  # fmt: skip
    return 0


def _compare(args: argparse.Namespace) -> int:
    from distill.evaluation.compare import compare, load_side

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    settings = (args.sampler, args.steps, args.guidance, args.n_images, args.rows_dir, args.ceiling_dir, args.evaluator)
    sides = [
        load_side(spec, *settings, progress=not args.no_progress, reuse=not args.fresh) for spec in (args.a, args.b)
    ]
    result = compare(sides[0], sides[1], args.out_dir, args.name, args.resamples)
    fd, adh = result["fd"], result["adherence"]["overall"]
    log.info(
        "%s - %s: FD %+.1f [%.1f, %.1f], adherence %+.3f [%.3f, %.3f] (paired, %d images); wrote %s",
        sides[1].label, sides[0].label, fd["diff"], *fd["ci"], float("nan") if adh["diff"] is None else adh["diff"],
        *(adh["ci"] or [float("nan")] * 2), result["n_images"], Path(args.out_dir),
    )  # fmt: skip
    return 0


def _ceiling(args: argparse.Namespace) -> int:
    from distill.evaluation.evaluate import teacher_ceiling

    for w in args.guidance:
        row = teacher_ceiling(
            args.teacher, w, args.n_images, args.out_dir, args.sampler, args.steps, args.evaluator,
            progress=not args.no_progress, reuse=not args.fresh,
        )  # fmt: skip
        fd, ci = row["fd"], row.get("fd_ci")
        log.info("%s: FD %.1f %s, adherence %.3f", row["name"], fd, ci, row["adherence"]["overall"])
    return 0


def _table(args: argparse.Namespace) -> int:
    import json

    from distill.reports.tables import TEACHER_GRID, teacher_table

    grid = TEACHER_GRID
    if args.report_only:  # rebuild teacher.md and the plot from the JSON rows already written
        from distill.reports.tables import table_rows_dir, write_table

        rows = [json.loads(p.read_text()) for p in sorted(table_rows_dir(args.out_dir).glob("*.json"))]
        if not rows:
            raise ValueError(f"--report-only: no rows in {table_rows_dir(args.out_dir)}")
        rows.sort(key=lambda r: (list(TEACHER_GRID).index(r["sampler"]), r["steps"]))
        out = Path(args.out_dir)
        write_table(rows, out / "teacher.md", out / "teacher_fd_nfe.png", "Teacher baselines", args.model)
        return 0
    if args.guidance is None:
        best = Path(args.out_dir) / "guidance" / "best.json"
        if not best.is_file():
            raise ValueError(f"--guidance not given and {best} does not exist (run `fewstep eval guidance` first)")
        args.guidance = json.loads(best.read_text())["guidance"]
        log.info("guidance %g from %s", args.guidance, best)
    if args.samplers:
        grid = {k: v for k, v in TEACHER_GRID.items() if k in args.samplers}
    teacher_table(
        args.model,
        args.guidance,
        args.n_images,
        args.out_dir,
        grid,
        progress=not args.no_progress,
        reuse=not args.fresh,
    )
    return 0


def _guidance(args: argparse.Namespace) -> int:
    from distill.reports.tables import guidance_sweep

    rows = guidance_sweep(
        args.model, tuple(args.weights), args.sampler, args.steps, args.n_images, args.out_dir,
        progress=not args.no_progress, reuse=not args.fresh,
    )  # fmt: skip
    for r in rows:
        log.info("w=%g: FD %.3f adherence %.3f", r["guidance"], r["fd"], r["adherence"]["overall"])
    return 0


def _train_evaluator(args: argparse.Namespace) -> int:
    import torch

    from distill.evaluation.evaluator import EvaluatorConfig, train_evaluator

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = EvaluatorConfig(seed=args.seed, steps=args.steps, test_images=args.test_images)
    manifest = train_evaluator(cfg, args.out, progress=not args.no_progress)
    worst = min(manifest["accuracy"][k] for k in ("background", "occupancy", "colour", "shape", "size"))
    log.info("wrote %s; lowest per-attribute accuracy %.4f", args.out, worst)
    return 0


EVAL_KEYS = ("sampler", "steps", "guidance", "nfe", "n_images", "fd", "fd_ci", "kid", "kid_ci", "precision", "recall",
             "adherence", "adherence_ci", "eval_set_version", "model_sha256", "seconds_per_image", "machine",
             "git_sha")  # fmt: skip


def add_commands(sub: argparse._SubParsersAction) -> argparse._SubParsersAction:
    ev = sub.add_parser("eval", help="evaluate a model on the shapes world (or train the evaluator)")
    ev.add_argument("--model", help="training run or checkpoint directory")
    ev.add_argument(
        "--sampler",
        choices=["ancestral", "ddim", "dpmpp-2m", "unipc"],
        help="default: a student's own (the one it was distilled for), else ancestral",
    )
    ev.add_argument("--steps", type=int, help="default: a student's own K, else 32")
    ev.add_argument("--guidance", type=float, default=3.0)
    ev.add_argument("--n-images", type=int, default=2000)
    ev.add_argument("--name", help="results file name (default: derived from the settings)")
    ev.add_argument("--out-dir", default="results")
    ev.add_argument("--evaluator", default="models/evaluator")
    ev.add_argument("--batch-size", type=int, default=250)
    ev.add_argument("--threads", type=int, help="torch CPU threads")
    ev.add_argument("--resamples", type=int, default=500, help="bootstrap resamples for the 95%% intervals (0: none)")
    ev.add_argument(
        "--analytic",
        action="store_true",
        help="also score adherence with the second, independent judge (distill.evaluation.analytic: a classical "
        "reader of the image written from the shapes world's specification; adherence_analytic in the row)",
    )
    ev.add_argument(
        "--fresh", action="store_true", help="re-measure even if OUT_DIR/NAME.json measured these weights and settings"
    )
    ev.add_argument("--no-progress", action="store_true")
    ev.set_defaults(handler=_eval)
    ev_sub = ev.add_subparsers(dest="eval_command", metavar="ACTION")
    cp = ev_sub.add_parser(
        "compare",
        help="paired comparison B - A on the same prompts and seeds, with 95%% bootstrap intervals",
        description="A and B: model directories (evaluated, or reused by hash), row .json files with a "
        "per-image sidecar beside them, or the .npz sidecars. A teacher directory without --sampler/--steps is "
        "taken at its ceiling (64 ancestral steps); a student at the sampler and K it was distilled for.",
    )
    cp.add_argument("a", help="the baseline: model directory, row .json or sidecar .npz")
    cp.add_argument("b", help="the model compared with it")
    cp.add_argument("--sampler", choices=["ancestral", "ddim", "dpmpp-2m", "unipc"], help="for model directories")
    cp.add_argument("--steps", type=int, help="for model directories")
    cp.add_argument("--guidance", type=float, default=3.0, help="for model directories")
    cp.add_argument("--n-images", type=int, default=2000, help="for model directories")
    cp.add_argument("--rows-dir", default="results/rows", help="where rows of model directories are kept")
    cp.add_argument("--ceiling-dir", default="results/ceiling", help="where teacher ceilings are kept")
    cp.add_argument("--out-dir", default="results/compare")
    cp.add_argument("--name", help="output name (default: <A>-vs-<B>)")
    cp.add_argument("--resamples", type=int, default=500)
    cp.add_argument("--evaluator", default="models/evaluator")
    cp.add_argument("--threads", type=int, help="torch CPU threads")
    cp.add_argument("--fresh", action="store_true", help="re-evaluate model directories even if a row is reusable")
    cp.add_argument("--no-progress", action="store_true")
    cp.set_defaults(handler=_compare)

    ce = ev_sub.add_parser(
        "ceiling", help="the teacher's 64-step ancestral row at each w, computed once and reused by hash"
    )
    ce.add_argument("--teacher", default="models/teacher")
    ce.add_argument("--guidance", type=float, nargs="+", default=[3.0])
    ce.add_argument("--n-images", type=int, default=2000)
    ce.add_argument("--sampler", default="ancestral", choices=["ancestral", "ddim", "dpmpp-2m", "unipc"])
    ce.add_argument("--steps", type=int, default=64)
    ce.add_argument("--out-dir", default="results/ceiling")
    ce.add_argument("--evaluator", default="models/evaluator")
    ce.add_argument("--fresh", action="store_true", help="re-evaluate even if a row is reusable")
    ce.add_argument("--no-progress", action="store_true")
    ce.set_defaults(handler=_ceiling)

    te = ev_sub.add_parser("train-evaluator", help="train the frozen scene evaluator from a seed")
    te.add_argument("--out", default="models/evaluator")
    te.add_argument("--seed", type=int, default=0)
    te.add_argument("--steps", type=int, default=3000)
    te.add_argument("--test-images", type=int, default=5000)
    te.add_argument("--threads", type=int, help="torch CPU threads")
    te.add_argument("--no-progress", action="store_true")
    te.set_defaults(handler=_train_evaluator)

    tb = ev_sub.add_parser("table", help="the teacher's sampler x steps table (results/teacher.md)")
    tb.add_argument("--model", required=True)
    tb.add_argument("--guidance", type=float, help="default: the best of `fewstep eval guidance`")
    tb.add_argument("--n-images", type=int, default=2000)
    tb.add_argument("--samplers", nargs="*", help="subset of ancestral ddim dpmpp-2m unipc")
    tb.add_argument("--out-dir", default="results")
    tb.add_argument("--no-progress", action="store_true")
    tb.add_argument("--report-only", action="store_true", help="rebuild the table and plot from existing rows")
    tb.add_argument("--fresh", action="store_true", help="re-measure rows already measured for the same weights")
    tb.set_defaults(handler=_table)

    gs = ev_sub.add_parser("guidance", help="sweep the guidance scale (results/guidance.md)")
    gs.add_argument("--model", required=True)
    gs.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0, 7.0])
    gs.add_argument("--sampler", default="ancestral")
    gs.add_argument("--steps", type=int, default=64)
    gs.add_argument("--n-images", type=int, default=2000)
    gs.add_argument("--out-dir", default="results")
    gs.add_argument("--no-progress", action="store_true")
    gs.add_argument("--fresh", action="store_true", help="re-measure rows already measured for the same weights")
    gs.set_defaults(handler=_guidance)
    return ev_sub
