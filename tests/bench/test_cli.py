"""`fewstep bench ...` (bench.cli): the commands and their defaults, the backend check, OpenMP
workers that sleep, and arguments passed through to the GPU check."""

from __future__ import annotations

import argparse
import sys
from types import SimpleNamespace

import pytest

from bench.cli import add_commands, passive_omp


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_every_bench_command_has_a_handler():
    for name in ("sampler", "quality", "profile", "batch-profile", "http", "gpu"):
        args = parse(["bench", name])
        assert args.bench_command == name and callable(args.handler), name
    with pytest.raises(SystemExit):
        parse(["bench"])  # a bench command is required


def test_unknown_sampler_paths_are_refused_naming_the_choices(monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    args = parse(["bench", "sampler", "--backends", "onnxruntime-fp32", "warp-drive"])
    with pytest.raises(ValueError, match=r"--backends: unknown \['warp-drive'\]; choose from .*onnxruntime-fp32"):
        args.handler(args)


def test_openmp_workers_are_made_passive_unless_a_policy_is_set(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    passive_omp()
    import os

    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    passive_omp()
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE"


def test_the_gpu_check_gets_the_arguments_after_the_double_dash(monkeypatch):
    seen = []
    monkeypatch.setitem(sys.modules, "bench.gpu", SimpleNamespace(main=lambda argv: seen.append(argv) or 7))
    args = parse(["bench", "gpu", "--", "--model", "m", "--quick"])
    assert args.handler(args) == 7
    args = parse(["bench", "gpu"])
    assert args.handler(args) == 7
    assert seen == [["--model", "m", "--quick"], []]
