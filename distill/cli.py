"""Offline subcommands: `fewstep data preview`, `train`, `pack`, `eval`, `export`.

Handlers import torch lazily so that listing commands works on the service-only install.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from distill.methods.config import METHOD_NAMES, MM_ALT

log = logging.getLogger(__name__)


def _preview(args: argparse.Namespace) -> int:
    import numpy as np

    import shapesworld as shapes
    from distill.kit.grid import save_grid

    items = [shapes.sample(args.seed, i, args.mode) for i in range(args.n)]
    images = np.stack([shapes.render(it.scene, it.placements, args.resolution) for it in items])
    path = save_grid(args.out, images, [it.caption for it in items], cols=args.cols)
    log.info("wrote %s (%d scenes, seed %d, mode %s)", path, args.n, args.seed, args.mode)
    return 0


def _train(args: argparse.Namespace) -> int:
    from distill.kit.config import load_config
    from distill.teacher.train import train

    cfg = load_config(args.preset, args.config, args.set)
    summary = train(cfg, args.out, resume=not args.no_resume, progress=not args.no_progress, stop_at=args.stop_at)
    log.info(
        "trained to step %d in %.0f s; final loss %.4f; summary in %s",
        summary["steps"],
        summary["wall_s"],
        summary["final_loss"] or float("nan"),
        Path(args.out) / "summary.json",
    )
    return 0


def _pack(args: argparse.Namespace) -> int:
    import json
    import shutil

    from distill.kit.checkpoint import PACKED_CONFIG, PACKED_WEIGHTS, pack_model

    run = Path(args.run)
    if (run / PACKED_CONFIG).is_file() and (run / PACKED_WEIGHTS).is_file():  # already packed: re-estimate v
        if args.estimate_adam_v is None:
            raise ValueError(f"{run} is a packed model, not a run: give --estimate-adam-v N to re-estimate its Adam v")
        out = Path(args.out)
        if out.resolve() != run.resolve():
            shutil.copytree(run, out, dirs_exist_ok=True)
        _estimate_adam_v(out, args)
        return 0
    extra = {}
    if (run / "summary.json").is_file():
        extra["training"] = json.loads((run / "summary.json").read_text())
    out = pack_model(run, args.out, extra)
    # Pictures people look at, beside the weights: the loss curve and the last sample grid.
    samples = sorted((run / "samples").glob("step*.png"))
    for src, name in ((run / "loss.png", "loss.png"), (samples[-1] if samples else None, "samples.png")):
        if src is not None and src.is_file():
            shutil.copyfile(src, out / name)
    if args.estimate_adam_v is not None:
        _estimate_adam_v(out, args)
    size = sum(p.stat().st_size for p in out.iterdir()) / 1e6
    log.info("packed %s into %s (%.1f MB)", run, out, size)
    return 0


def _estimate_adam_v(out: Path, args: argparse.Namespace) -> None:
    import torch

    from distill.teacher.adam_v import estimate_adam_v, second_moment_stats

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    stats = second_moment_stats(estimate_adam_v(out, args.estimate_adam_v, device, progress=not args.no_progress))
    log.info(
        "Adam v of %s re-estimated from %d minibatches (fp32): %.2f%% zeros, %.2f%% subnormal, median %.3g",
        out, args.estimate_adam_v, 100 * stats["zero_share"], 100 * stats["subnormal_share"], stats["median"],
    )  # fmt: skip


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
    if row is not None:
        log.info("%s: reusing the row already measured for these weights and settings (--fresh re-measures)", name)
    else:
        row = evaluate(
            *settings, name, args.out_dir, args.evaluator, args.batch_size,
            progress=not args.no_progress, resamples=args.resamples,
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


def _distill_table(args: argparse.Namespace) -> int:
    from distill.reports.distill_table import distill_table

    students = [p.parent for d in args.students for p in sorted(Path(d).glob("**/config.json"))]
    from distill.kit.checkpoint import student_info

    students = sorted({p for p in students if student_info(p) is not None})
    if not students:
        raise ValueError(f"--students: no distilled students under {args.students}")
    sampler, steps = args.teacher_best
    distill_table(
        students, args.teacher, args.guidance, args.n_images, args.out_dir, (sampler, int(steps)),
        progress=not args.no_progress, reuse=not args.fresh, ceiling_dir=args.ceiling_dir, reference=args.reference,
        served_row=args.served_row, regenerate=args.regenerate,
    )  # fmt: skip
    return 0


def _ship_students(args: argparse.Namespace) -> int:
    from distill.reports.winners import ship

    for path in ship(args.winners, args.out, allow_fixed_guidance=args.allow_fixed_guidance):
        log.info("shipped %s", path)
    return 0


def _distill_guidance(args: argparse.Namespace) -> int:
    from distill.reports.distill_table import guidance_compare

    guidance_compare(
        Path(args.student), args.teacher, tuple(args.weights), tuple(args.teacher_steps), args.n_images,
        args.out_dir, progress=not args.no_progress, reuse=not args.fresh,
    )  # fmt: skip
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


def _evaluation_rows(files: list[str], model: Path) -> dict[str, dict]:
    """The results rows a bundle records, keyed `{sampler}-{steps}-w{guidance}`. A row measured on
    other weights is refused by name: a bundle that quotes another model's figures is worse than
    one that quotes none (rows from before `model_sha256` was recorded are taken as they are)."""
    import json

    from distill.kit.checkpoint import weights_file
    from fewstep.bundle import sha256_file

    sha = sha256_file(weights_file(model)[0])
    evaluation = {}
    for f in files:
        row = json.loads(Path(f).read_text())
        if row.get("model_sha256") not in (None, sha):
            raise SystemExit(f"--evaluation {f}: measured on weights {row['model_sha256'][:12]}, not {model}'s "
                             f"{sha[:12]}; re-evaluate it (make results-all)")  # fmt: skip
        evaluation[f"{row['sampler']}-{row['steps']}-w{row['guidance']:g}"] = {k: row.get(k) for k in EVAL_KEYS}
    return evaluation


def _export(args: argparse.Namespace) -> int:
    from distill.export.bundle import export_bundle

    evaluation = _evaluation_rows(args.evaluation, Path(args.model))
    manifest = export_bundle(
        args.model, args.out, args.name, args.steps, args.default_steps, args.guidance, evaluation, args.cache_dir,
        args.max_batch,
    )  # fmt: skip
    log.info(
        "bundle %s: steps %s (default %d), guidance %g..%g (default %g), %d files",
        manifest.name, sorted(manifest.steps), manifest.default_steps, manifest.guidance.min, manifest.guidance.max,
        manifest.guidance.default, len(manifest.files),
    )  # fmt: skip
    return 0


def _distill(args: argparse.Namespace) -> int:
    from distill.methods.config import load_distill_config
    from distill.methods.registry import distill
    from distill.methods.runloop import RunOptions

    # --method and --steps override the preset and the --config file only when given (their argparse
    # default is None), and --set overrides them all.
    given = [f"{key}={value}" for key, value in (("method", args.method), ("steps", args.steps)) if value is not None]
    cfg = load_distill_config(args.preset, args.config, [*given, *args.set])
    if args.budget_images is not None:
        from distill.methods.registry import METHODS
        from distill.methods.runloop import iters_for_budget

        iters = iters_for_budget(METHODS[cfg.method].run, cfg, args.budget_images)
        cfg = load_distill_config(args.preset, args.config, [*given, *args.set, f"iters={iters}"])
        log.info("--budget-images %d: %d iterations of %s at batch %d", args.budget_images, iters, cfg.method,
                 cfg.batch_size)  # fmt: skip
    options = RunOptions(
        resume=not args.no_resume, progress=not args.no_progress, stop_at=args.stop_at,
        max_seconds=None if args.max_minutes is None else 60 * args.max_minutes, pack_unfinished=args.pack_unfinished,
    )  # fmt: skip
    summary = distill(cfg, args.teacher, args.out, options)
    log.info(
        "%s K=%d: %d iterations in %.0f s (%.2g image forward passes); student in %s",
        cfg.method, cfg.steps, summary["iters"], summary["wall_s"], summary["network_forward_images"],
        Path(args.out) / "student"
        if summary["finished"] or args.pack_unfinished
        else "(unfinished: resume with the same command)",
    )  # fmt: skip
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    di = sub.add_parser("distill", help="distill a few-step student from the teacher (moment matching)")
    di.add_argument("--teacher", required=True, help="packed teacher (models/teacher) or its training run")
    di.add_argument("--method", choices=METHOD_NAMES, help=f"default: the --config file's, else {MM_ALT}")
    di.add_argument("--steps", type=int, help="K, the student's sampling steps (default: the --config file's, else 8)")
    di.add_argument("--preset", default="shapes32-cpu", help="shapes32-cpu | shapes32-gpu | tiny")
    di.add_argument("--config", help="JSON config file (merged over the preset)")
    di.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. iters=500")
    di.add_argument(
        "--budget-images",
        type=int,
        help="size the run in training image passes instead of updates: iters becomes the fewest that draw this "
        "many training images (methods draw different numbers an update; overrides --set iters)",
    )
    di.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    di.add_argument("--no-resume", action="store_true")
    di.add_argument("--no-progress", action="store_true")
    di.add_argument("--stop-at", type=int, help="checkpoint and stop at this iteration (resume later)")
    di.add_argument("--max-minutes", type=float, help="time box: checkpoint and stop after this long")
    di.add_argument("--pack-unfinished", action="store_true", help="pack the student even if the run stopped early")
    di.set_defaults(handler=_distill)
    ex = sub.add_parser("export", help="export a trained model to a bundle (ONNX graphs + tokenizer + manifest)")
    ex.add_argument("--model", required=True, help="packed model (models/NAME) or training run")
    ex.add_argument("--out", required=True, help="bundle directory, e.g. bundles/teacher")
    ex.add_argument("--name", help="model name served (default: the --out directory's name)")
    ex.add_argument("--steps", type=int, nargs="+", help="supported step counts (teacher default: 8 16 32 64)")
    ex.add_argument("--default-steps", type=int, help="default step count (teacher: 16)")
    ex.add_argument("--guidance", type=float, nargs=3, metavar=("MIN", "DEFAULT", "MAX"), help="guidance range")
    ex.add_argument("--evaluation", action="append", default=[], metavar="JSON", help="results row(s) to record")
    ex.add_argument("--cache-dir", help="where the text encoder graph is cached (default: OUT/../.cache)")
    ex.add_argument("--max-batch", type=int, default=64, help="largest batch the graphs' engines must support")
    ex.set_defaults(handler=_export)

    data = sub.add_parser("data", help="inspect training data")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    pv = data_sub.add_parser("preview", help="write a captioned grid of shapes-world scenes")
    pv.add_argument("--out", required=True, help="PNG path")
    pv.add_argument("--n", type=int, default=32, help="number of scenes")
    pv.add_argument("--cols", type=int, default=8)
    pv.add_argument("--seed", type=int, default=0)
    pv.add_argument("--resolution", type=int, default=32)
    pv.add_argument("--mode", choices=["train", "held_out", "all"], default="train")
    pv.set_defaults(handler=_preview)

    tr = sub.add_parser("train", help="train a text-conditioned pixel-space teacher")
    tr.add_argument("--preset", help="shapes32-cpu | shapes64-gpu | tiny")
    tr.add_argument("--config", help="JSON config file (merged over the preset)")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. steps=2000")
    tr.add_argument("--out", required=True, help="run directory (resumed if it holds a checkpoint)")
    tr.add_argument("--no-resume", action="store_true", help="start over even if --out holds a checkpoint")
    tr.add_argument("--no-progress", action="store_true", help="no progress bar")
    tr.add_argument("--stop-at", type=int, help="checkpoint and stop at this step (resume later)")
    tr.set_defaults(handler=_train)

    pk = sub.add_parser("pack", help="pack a run's EMA weights, config and Adam moments for committing")
    pk.add_argument("--run", required=True, help="training run or checkpoint directory")
    pk.add_argument("--out", required=True, help="e.g. models/teacher")
    pk.add_argument(
        "--estimate-adam-v",
        type=int,
        metavar="N",
        help="re-estimate Adam's second moments (fp32) from N minibatches of the teacher's training loss at its "
        "packed weights (--run may then be a packed model, rewritten in place when --out is the same directory)",
    )
    pk.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="for --estimate-adam-v")
    pk.add_argument("--threads", type=int, help="torch CPU threads (--estimate-adam-v)")
    pk.add_argument("--no-progress", action="store_true")
    pk.set_defaults(handler=_pack)

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

    dt = ev_sub.add_parser("distill-table", help="students against the teacher at equal steps (results/distill.md)")
    dt.add_argument("--students", nargs="+", required=True, help="directories holding packed students")
    dt.add_argument("--teacher", default="models/teacher")
    dt.add_argument("--guidance", type=float, default=3.0)
    dt.add_argument("--teacher-best", nargs=2, default=["ancestral", "64"], metavar=("SAMPLER", "STEPS"))
    dt.add_argument("--n-images", type=int, default=2000)
    dt.add_argument("--out-dir", default="results")
    dt.add_argument(
        "--ceiling-dir", default=None, help="where the teacher's best row is kept and reused (default: OUT_DIR/ceiling)"
    )
    dt.add_argument("--reference", default="mm-alt", help="the method every other is compared with, pairwise at each K")
    dt.add_argument(
        "--served-row",
        default=None,
        help="the teacher's row at its served setting, the default model's one-object floor "
        "(default: OUT_DIR/teacher/ancestral-16.json)",
    )
    dt.add_argument(
        "--regenerate", default="make results-distill", help="the command the table names as the one regenerating it"
    )
    dt.add_argument("--no-progress", action="store_true")
    dt.add_argument("--fresh", action="store_true", help="re-evaluate rows already measured for the same weights")
    dt.set_defaults(handler=_distill_table)

    dg = ev_sub.add_parser(
        "distill-guidance", help="one student against the teacher at the same w (results/distill_guidance.md)"
    )
    dg.add_argument("--student", required=True, help="a packed student")
    dg.add_argument("--teacher", default="models/teacher")
    dg.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0])
    dg.add_argument("--teacher-steps", type=int, nargs="+", default=[8, 32], help="the teacher's ancestral steps")
    dg.add_argument("--n-images", type=int, default=2000)
    dg.add_argument("--out-dir", default="results")
    dg.add_argument("--no-progress", action="store_true")
    dg.add_argument("--fresh", action="store_true", help="re-evaluate rows already measured for the same weights")
    dg.set_defaults(handler=_distill_guidance)

    ss = ev_sub.add_parser(
        "ship-students",
        help="copy each K's winner of the distillation table into models/students (distill/reports/winners.py)",
    )
    ss.add_argument("--winners", default="results/distill_winners.json", help="written by `fewstep eval distill-table`")
    ss.add_argument("--out", default="models/students")
    ss.add_argument(
        "--allow-fixed-guidance", action="store_true", help="ship students distilled at one w (they serve only it)"
    )
    ss.set_defaults(handler=_ship_students)

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
