"""`fewstep bench ...`: every benchmark is one subcommand, registered here.

In one process (`bench.cli.compute`): sampler, quality, profile, gpu, model-cost. Against servers
(`bench.cli.serving`): http, peer, step-sched, batch-profile, memory, and the servers some of them
start as child processes (sim-server, peer-server). Each handler builds its module's typed config
from the flags and calls one function of the module; the modules themselves have no command line
and import without side effects.
"""

from __future__ import annotations

import argparse

from bench.cli.compute import add_compute_commands, passive_omp
from bench.cli.serving import add_serving_commands

__all__ = ["add_commands", "passive_omp"]


def add_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser(
        "bench",
        help="benchmarks: sampler throughput, precision quality, profiles, GPU check, servers under load",
        description="Benchmarks, one subcommand each (`fewstep bench BENCH --help` for its flags).",
    )
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    add_compute_commands(bsub)
    add_serving_commands(bsub)
