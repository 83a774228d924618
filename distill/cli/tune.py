"""`fewstep tune`: preference tuning of a distilled student (PSO, `distill.tune.pso`)."""

from __future__ import annotations

import argparse
import logging

from distill.tune.config import PSO, TUNE_METHODS

log = logging.getLogger(__name__)


def _tune(args: argparse.Namespace) -> int:
    from distill.tune.config import load_pso_config
    from distill.tune.pso import EvaluatorJudge, tune

    cfg = load_pso_config(args.preset, args.config, args.set)
    summary = tune(cfg, args.model, args.out, EvaluatorJudge(args.evaluator), progress=not args.no_progress)
    log.info("tuned in %.0f s over %d preference pairs: %s/student (score it with fewstep eval --analytic)",
             summary["wall_s"], summary["pairs"], args.out)  # fmt: skip
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    tu = sub.add_parser("tune", help="preference-tune a distilled student on its own samples (PSO)")
    tu.add_argument("--method", choices=TUNE_METHODS, default=PSO, help="pso: pairwise sample optimisation")
    tu.add_argument("--model", required=True, help="packed student directory (a run's student/)")
    tu.add_argument("--out", required=True, help="run directory; the tuned student goes to OUT/student")
    tu.add_argument("--preset", default="shapes32-cpu", help="shapes32-cpu | shapes32-gpu | tiny")
    tu.add_argument("--config", help="JSON config file (merged over the preset)")
    tu.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override, e.g. iters=50")
    tu.add_argument("--evaluator", default="models/evaluator", help="the judge that ranks each pair")
    tu.add_argument("--no-progress", action="store_true")
    tu.set_defaults(handler=_tune)
