"""`fewstep bench ...` (bench.cli): every benchmark is a subcommand with a handler, the help lists
them all, the backend check, OpenMP workers that sleep, and the GPU check's flags."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import bench.gpu
from bench.cli import passive_omp

ROOT = Path(__file__).resolve().parents[2]

# every benchmark, with the least it needs to parse
COMMANDS = {
    "sampler": [],
    "quality": [],
    "profile": [],
    "gpu": [],
    "model-cost": ["models/teacher", "--out", "cost.json"],
    "http": [],
    "peer": [],
    "step-sched": [],
    "batch-profile": [],
    "memory": [],
    "slo": [],
    "soak": [],
    "sim-server": ["--port", "8000", "--cost-ms", "14,0.09"],
    "peer-server": ["--bundle", "bundles/pd-k4"],
}


def test_every_bench_command_has_a_handler(bench_args):
    for name, argv in COMMANDS.items():
        args = bench_args([name, *argv])
        assert args.bench_command == name and callable(args.handler), name
    with pytest.raises(SystemExit):
        bench_args([])  # a bench command is required


def test_fewstep_bench_help_lists_every_benchmark():
    out = subprocess.run(
        [sys.executable, "-m", "fewstep_cli", "bench", "--help"], capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("    ") and line.split()}
    assert listed >= set(COMMANDS), sorted(set(COMMANDS) - listed)


def test_unknown_sampler_paths_are_refused_naming_the_choices(bench_args, monkeypatch):
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    args = bench_args(["sampler", "--backends", "onnxruntime-fp32", "warp-drive"])
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


def test_the_gpu_check_gets_its_flags_as_one_config(bench_args, monkeypatch):
    seen = []
    monkeypatch.setattr(bench.gpu, "run_gpu_check", lambda cfg: seen.append(cfg) or 7)
    args = bench_args(["gpu", "--model", "m", "--batches", "1", "2", "--skip", "compile", "--precisions", "fp32"])
    assert args.handler(args) == 7
    args = bench_args(["gpu"])
    assert args.handler(args) == 7
    assert (seen[0].model, seen[0].batches, seen[0].skip, seen[0].precisions) == ("m", (1, 2), ("compile",), ("fp32",))
    assert seen[1] == bench.gpu.GpuCheckConfig()  # no flags: the config's defaults
