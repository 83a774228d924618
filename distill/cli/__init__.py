"""The offline side's subcommands, one module per command group: `fewstep distill`
(`distill.cli.distill`), `tune` (`distill.cli.tune`), `export`, `data` / `train` / `pack`
(`distill.cli.teacher`), `eval` and its measuring actions (`distill.cli.evaluate`) and the
distillation reports (`distill.cli.reports`).

Handlers import torch lazily, so listing commands works on the service-only install.
"""

from __future__ import annotations

import argparse

from distill.cli import distill, evaluate, export, reports, teacher, tune


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register every offline subcommand on `fewstep`'s subparsers."""
    distill.add_commands(sub)
    tune.add_commands(sub)
    export.add_commands(sub)
    teacher.add_commands(sub)
    reports.add_commands(evaluate.add_commands(sub))
