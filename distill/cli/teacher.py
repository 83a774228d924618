"""`fewstep data preview`, `fewstep train` and `fewstep pack`: the data, teacher training and packing."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

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


def add_commands(sub: argparse._SubParsersAction) -> None:
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
