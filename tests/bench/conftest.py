"""What the bench tests share: `fewstep bench ...` parsed and run in this process, through the
same registration (`bench.cli.add_commands`) as the `fewstep` command."""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pytest

from bench.cli import add_commands


def parse_bench(argv: list[str]) -> argparse.Namespace:
    """`fewstep bench ARGV`'s parsed flags (a SystemExit where argparse refuses them)."""
    parser = argparse.ArgumentParser(prog="fewstep")
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(["bench", *argv])


@pytest.fixture
def bench_args() -> Callable[[list[str]], argparse.Namespace]:
    return parse_bench


@pytest.fixture
def run_bench() -> Callable[[list[str]], int]:
    """`fewstep bench ARGV` in this process: its handler's exit status."""

    def run(argv: list[str]) -> int:
        args = parse_bench(argv)
        return args.handler(args)

    return run
