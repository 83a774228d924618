"""The `fewstep bench http` command line (bench.http_cli): flags into the config, and --report-only."""

from __future__ import annotations

import argparse
import json

import pytest

import bench.http
import bench.http_report
from bench.http import HttpBenchConfig
from bench.http_cli import add_arguments


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


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


def test_no_flags_is_the_default_config(fake_bench, tmp_path):
    args = parse(["--out", str(tmp_path)])
    assert args.handler(args) == 0
    assert fake_bench["cfg"] == HttpBenchConfig() and fake_bench["out"] == tmp_path
    assert (tmp_path / "http.md").read_text() == "report of ['ratios']\n"


def test_flags_reach_the_config(fake_bench, tmp_path):
    argv = ["--bundles", "b1", "b2", "--mix", "model=b1,steps=4", "--concurrency", "2", "8", "--loads", "0.5"]
    argv += ["--closed-s", "3", "--threads", "2", "--seed", "9", "--py-spy-s", "5", "--out", str(tmp_path)]
    args = parse(argv)
    args.handler(args)
    cfg = fake_bench["cfg"]
    assert (cfg.bundles, cfg.mix, cfg.concurrency, cfg.loads) == (("b1", "b2"), ("model=b1,steps=4",), (2, 8), (0.5,))
    assert (cfg.closed_s, cfg.threads, cfg.seed, cfg.py_spy_s) == (3.0, 2, 9, 5.0)


def test_report_only_recomputes_the_ratios_from_http_json_without_running(fake_bench, tmp_path):
    (tmp_path / "http.json").write_text(json.dumps({"config": {"mix": ["model=a,steps=4"]}, "ratios": {}}))
    args = parse(["--report-only", "--out", str(tmp_path)])
    assert args.handler(args) == 0
    assert "cfg" not in fake_bench  # nothing measured
    doc = json.loads((tmp_path / "http.json").read_text())
    assert doc["ratios"] == {"classes": ["a/k4"]} and fake_bench["plotted"]["ratios"] == doc["ratios"]
    assert (tmp_path / "http.md").read_text() == "report of ['config', 'ratios']\n"
