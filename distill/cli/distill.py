"""`fewstep distill`: a few-step student from the packed teacher, any method of the registry."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from distill.methods.config import METHOD_NAMES, MM_ALT

log = logging.getLogger(__name__)


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
    stop_at = args.stop_at
    if args.stop_at_images is not None:
        from distill.methods.registry import METHODS
        from distill.methods.runloop import iters_for_budget

        if stop_at is not None:
            raise ValueError("give --stop-at or --stop-at-images, not both")
        stop_at = iters_for_budget(METHODS[cfg.method].run, cfg, args.stop_at_images)
        log.info("--stop-at-images %d: stop at iteration %d", args.stop_at_images, stop_at)
    options = RunOptions(
        resume=not args.no_resume, progress=not args.no_progress, stop_at=stop_at,
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
    di.add_argument(
        "--stop-at-images",
        type=int,
        help="checkpoint and stop at the first iteration that has drawn this many training images (a learning "
        "curve's points at equal image passes across methods)",
    )
    di.add_argument("--max-minutes", type=float, help="time box: checkpoint and stop after this long")
    di.add_argument("--pack-unfinished", action="store_true", help="pack the student even if the run stopped early")
    di.set_defaults(handler=_distill)
