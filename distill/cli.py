"""Offline subcommands: `fewstep data preview`, `fewstep train` (later: eval, distill, export).

Handlers import torch lazily so that listing commands works on the service-only install.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _preview(args: argparse.Namespace) -> int:
    import numpy as np

    from distill.grid import save_grid
    from fewstep import shapes

    items = [shapes.sample(args.seed, i, args.mode) for i in range(args.n)]
    images = np.stack([shapes.render(it.scene, it.placements, args.resolution) for it in items])
    path = save_grid(args.out, images, [it.caption for it in items], cols=args.cols)
    log.info("wrote %s (%d scenes, seed %d, mode %s)", path, args.n, args.seed, args.mode)
    return 0


def _train(args: argparse.Namespace) -> int:
    from distill.config import load_config
    from distill.train import train

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
