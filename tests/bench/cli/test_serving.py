"""The serving benchmarks' command line (bench.cli.serving): `fewstep bench http` flags into the
config and --report-only; `fewstep bench step-sched` flags into both servers' settings, and refused
early where they are wrong."""

from __future__ import annotations

import json

import pytest

import bench.http
import bench.http_report
from bench.cli.serving import step_options
from bench.http import HttpBenchConfig


@pytest.fixture
def fake_bench(monkeypatch):
    """`run_http_bench` and the report functions replaced by recorders (no servers, no plots)."""
    calls = {}

    def run_http_bench(cfg, out):
        calls["cfg"], calls["out"] = cfg, out
        return {"ratios": {"http_over_raw": 0.9}}

    monkeypatch.setattr(bench.http, "run_http_bench", run_http_bench)
    monkeypatch.setattr(bench.http_report, "markdown", lambda doc: f"report of {sorted(doc)}")
    monkeypatch.setattr(bench.http_report, "plot", lambda doc, out: calls.setdefault("plotted", doc))
    monkeypatch.setattr(bench.http_report, "ratios", lambda doc, classes: {"classes": [c.label for c in classes]})
    return calls


def test_no_flags_is_the_default_config(fake_bench, run_bench, tmp_path):
    assert run_bench(["http", "--out", str(tmp_path)]) == 0
    assert fake_bench["cfg"] == HttpBenchConfig() and fake_bench["out"] == tmp_path
    assert (tmp_path / "http.md").read_text() == "report of ['ratios']\n"


def test_flags_reach_the_config(fake_bench, run_bench, tmp_path):
    argv = ["--bundles", "b1", "b2", "--mix", "model=b1,steps=4", "--concurrency", "2", "8", "--loads", "0.5"]
    argv += ["--closed-s", "3", "--threads", "2", "--seed", "9", "--py-spy-s", "5", "--out", str(tmp_path)]
    run_bench(["http", *argv])
    cfg = fake_bench["cfg"]
    assert (cfg.bundles, cfg.mix, cfg.concurrency, cfg.loads) == (("b1", "b2"), ("model=b1,steps=4",), (2, 8), (0.5,))
    assert (cfg.closed_s, cfg.threads, cfg.seed, cfg.py_spy_s) == (3.0, 2, 9, 5.0)


def test_report_only_recomputes_the_ratios_from_http_json_without_running(fake_bench, run_bench, tmp_path):
    (tmp_path / "http.json").write_text(json.dumps({"config": {"mix": ["model=a,steps=4"]}, "ratios": {}}))
    assert run_bench(["http", "--report-only", "--out", str(tmp_path)]) == 0
    assert "cfg" not in fake_bench  # nothing measured
    doc = json.loads((tmp_path / "http.json").read_text())
    assert doc["ratios"] == {"classes": ["a/k4"]} and fake_bench["plotted"]["ratios"] == doc["ratios"]
    assert (tmp_path / "http.md").read_text() == "report of ['config', 'ratios']\n"


def test_step_sched_servers_backend_and_device_reach_the_serve_command_and_its_settings(bench_args, tmp_path):
    """`--backend torch --device cuda` (the GPU run, scripts/device/step_sched.sh) become both
    servers' `fewstep serve` flags, and those flags the service's backend settings."""
    from bench.server import ServerProcess
    from bench.step_sched import server_settings
    from fewstep_cli.main import build_parser
    from service.cli import settings_from_args

    cfg, out, plot_from = step_options(
        bench_args(["step-sched", "--backend", "torch", "--device", "cuda", "--max-batch-images", "16", "--out", "o"])
    )
    assert (cfg.backend, cfg.device, cfg.max_batch_images, out.name, plot_from) == ("torch", "cuda", 16, "o", None)
    server = ServerProcess(cfg.bundles, tmp_path / "serve.log", scheduling="step", **server_settings(cfg))
    cmd = server.cmd[server.cmd.index("serve") :]
    assert cmd[cmd.index("--backend") + 1] == "torch" and cmd[cmd.index("--device") + 1] == "cuda"
    assert "--precision" not in cmd and "--threads" not in cmd  # unset: the service's own defaults
    settings = settings_from_args(build_parser().parse_args(cmd))
    assert (settings.backend.kind, settings.backend.device, settings.backend.precision) == ("torch", "cuda", "auto")
    assert (settings.scheduling, settings.max_batch_images) == ("step", 16)

    cfg, _, _ = step_options(bench_args(["step-sched", "--backend", "torch-bf16"]))
    assert server_settings(cfg)["precision"] == "bf16" and server_settings(cfg)["device"] is None
    assert server_settings(step_options(bench_args(["step-sched"]))[0]) == dict.fromkeys(
        ("backend", "precision", "device", "threads", "max_batch_images")
    )  # the CPU run's command is unchanged


@pytest.mark.parametrize("bad", ["torhc", "torch-fp8", "cuda"])
def test_step_sched_refuses_an_unknown_backend_before_any_server_starts(bad, bench_args, capsys):
    with pytest.raises(SystemExit):
        bench_args(["step-sched", "--backend", bad])
    assert "--backend" in capsys.readouterr().err


def test_step_sched_simulate_serves_the_sim_model_with_the_same_flags_on_both_servers(bench_args, tmp_path, capsys):
    from bench.sim_server import SimServerProcess
    from bench.step_sched import SIM_MIX, server_for

    cfg, _, _ = step_options(bench_args(["step-sched", "--simulate", "14,0.09", "--max-batch-images", "16"]))
    assert cfg.mix == SIM_MIX and cfg.simulate == "14,0.09"
    for scheduling in ("request", "step"):
        server = server_for(cfg, tmp_path, scheduling)
        assert isinstance(server, SimServerProcess)
        cmd = server.cmd
        assert cmd[cmd.index("--cost-ms") + 1] == "14,0.09" and cmd[cmd.index("--scheduling") + 1] == scheduling
        assert cmd[cmd.index("--max-batch-images") + 1] == "16"
    default = step_options(bench_args(["step-sched"]))[0]
    assert default.mix == default.__class__().mix  # without it: the bundles' mix

    with pytest.raises(SystemExit):
        bench_args(["step-sched", "--simulate", "14"])
    assert "--simulate" in capsys.readouterr().err
    with pytest.raises(ValueError, match="drop"):  # `fewstep` prints it as an error, exit status 2
        step_options(bench_args(["step-sched", "--simulate", "1,1", "--device", "cuda"]))
