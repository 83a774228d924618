"""`fewstep bench slo`: the bursty trace, the static rule, the figures and targets, and a short run
of the whole benchmark over a simulated family (real engines, sleeping denoisers)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from bench.slo import SloBenchConfig, ThresholdRouter, load, servers, sim_family
from bench.slo_markdown import markdown
from bench.slo_report import analyse, targets
from bench.slo_trace import Mmpp, make_trace, prompt_pools
from fewstep.bundle import write_manifest
from service.engine.slo import Backlog, Option, SloConfig, Work
from service.engine.types import GenerateRequest, ResolvedRequest
from service.fakes import evaluation_row, fake_manifest

TWO = "a green cross on the left and a pink circle on the right"


def test_the_mmpp_keeps_its_mean_rate_and_its_bursts():
    process = Mmpp(rate=10.0, burst_ratio=4.0, burst_share=0.25, burst_s=2.0)
    assert process.burst_rate == pytest.approx(4 * process.calm_rate)
    assert 0.25 * process.burst_rate + 0.75 * process.calm_rate == pytest.approx(10.0)
    arrivals = process.times(4000.0, random.Random(0), random.Random(1))
    assert len(arrivals) / 4000.0 == pytest.approx(10.0, rel=0.05)
    in_bursts = sum(b for _, b in arrivals) / len(arrivals)
    assert in_bursts == pytest.approx(0.25 * 4 / 1.75, abs=0.05)  # bursts hold 4/7 of the arrivals


def test_loads_share_their_bursts_and_prompts():
    pools = prompt_pools(32, 0)
    assert set(pools) == {"one_object", "two_objects"} and all(len(p) == 32 for p in pools.values())
    low = make_trace(Mmpp(5.0), 60.0, 0.5, pools, seed=3)
    high = make_trace(Mmpp(10.0), 60.0, 0.5, pools, seed=3)
    assert len(high) == pytest.approx(2 * len(low), rel=0.15)
    assert [(a.prompt, a.seed) for a in low[:20]] == [(a.prompt, a.seed) for a in high[:20]]
    assert high[5].t == pytest.approx(low[5].t / 2, rel=0.5)  # the same stream, twice as dense
    assert make_trace(Mmpp(5.0), 60.0, 0.5, pools, seed=3) == low


def family_bundles(root: Path) -> tuple[str, str]:
    """Two bundle directories whose manifests are an 8- and a 4-step student with rows (no graphs)."""
    out = []
    for name, steps, rows in (("k8", 8, (0.954, 0.642)), ("k4", 4, (0.929, 0.511))):
        d = root / name
        d.mkdir()
        for f in ("denoiser.onnx", "text_encoder.onnx"):
            (d / f).write_bytes(b"not a graph")
        m = fake_manifest(name, steps=(steps,), network_input=True, evaluation={"r": evaluation_row(steps, *rows)})
        write_manifest(d, m)
        out.append(str(d))
    return out[0], out[1]


def test_the_simulated_family_keeps_names_steps_and_rows_and_the_rule_is_class_blind(tmp_path):
    bundles = family_bundles(tmp_path)
    pipes = {p.name: p for p in sim_family(bundles, (1.0, 2.0))}
    assert sorted(pipes) == ["k4", "k8"] and pipes["k8"].manifest.evaluation["r"]["steps"] == 8
    assert (pipes["k8"].denoiser.delay_s, pipes["k8"].denoiser.per_image_s) == pytest.approx((0.001, 0.002))
    rule = ThresholdRouter(pipes, SloConfig(objective_s=1.0), Option("k4", 4), threshold_images=3, max_batch=4)
    asked = ResolvedRequest("k8", TWO, 0, 1, 8, 3.0, "")
    short = Backlog(queued=(Work("k8", 8, 2),))
    long = Backlog(queued=(Work("k8", 8, 3),))
    assert rule.route(GenerateRequest("k8", TWO, 0), asked, short, 0.0).served == Option("k8", 8)
    moved = rule.route(GenerateRequest("k8", TWO, 0), asked, long, 0.0)
    assert (moved.served, moved.reason, moved.prompt_class) == (Option("k4", 4), "slo", "two_objects")
    names = [s.name for s in servers(SloBenchConfig(thresholds=(0.5,)), "k8", "k4", cap=10.0)]
    assert names == ["fixed-8", "fixed-4", "rule-x0.5", "controller", "controller-reactive"]


def outcome(t: float, latency: float, model: str, cls: str = "two_objects", reason: str = "as_asked") -> dict:
    steps = 8 if model == "k8" else 4
    return {"status": 200, "t": t, "latency_s": latency, "prompt_class": cls, "burst": False, "model": model,
            "steps": steps, "reason": reason, "predicted_s": latency}  # fmt: skip


def synthetic_doc() -> dict:
    """Two loads by hand: at the second, fixed-8 is late and the controller moves requests in time."""
    quality = {"adherence": {"k8@8": {"one_object": 0.95, "two_objects": 0.64, "overall": 0.8},
                             "k4@4": {"one_object": 0.93, "two_objects": 0.51, "overall": 0.72}},
               "adherence_ci": {"k8@8": {"two_objects": [0.62, 0.66]}}}  # fmt: skip
    n = 200

    def server(make, downgrades=0):
        return {"outcomes": [make(i) for i in range(n)], "counted_downgrades": downgrades}

    calm = {name: server(lambda i: outcome(i * 0.1, 0.1, "k8")) for name in ("fixed-8", "controller", "rule-x0.5")}
    calm["fixed-4"] = server(lambda i: outcome(i * 0.1, 0.05, "k4"))
    busy = {
        "fixed-8": server(lambda i: outcome(i * 0.1, 2.0 if i % 4 == 0 else 0.3, "k8")),
        "fixed-4": server(lambda i: outcome(i * 0.1, 0.1, "k4")),
        "controller": server(
            lambda i: outcome(i * 0.1, 0.4, *(("k4", "one_object", "pressure") if i % 2 else ("k8", "two_objects"))),
            downgrades=100,
        ),
        "rule-x0.5": server(
            lambda i: outcome(i * 0.1, 0.3, *(("k4", "two_objects", "slo") if i % 2 == 0 else ("k8",))), downgrades=100
        ),
    }
    return {
        "config": {"objective_ms": 1000, "burst_s": 2.0, "seed": 0},
        "quality_rows": quality,
        "loads": [{"load": 0.3, "arrivals": n, "servers": calm}, {"load": 0.7, "arrivals": n, "servers": busy}],
    }


def test_the_figures_and_the_targets():
    a = analyse(synthetic_doc())
    busy = a["loads"][1]["servers"]
    assert busy["fixed-8"]["over_share"] == pytest.approx(0.25) and busy["controller"]["over_share"] == 0.0
    assert busy["controller"]["adherence"] == pytest.approx((0.93 + 0.64) / 2)
    assert busy["controller"]["downgrades_by_class"]["one_object"] == {"answered": 100, "downgraded": 100}
    diff = a["loads"][1]["controller_vs"]["fixed-4"]
    assert diff["adherence_diff"] == pytest.approx((0.93 + 0.64) / 2 - 0.51)
    assert diff["adherence_diff_ci"][0] > 0  # resolved: every request scored 0.02 to 0.13 more
    t = a["targets"]
    assert t["low_load_as_asked"]["holds"] and t["burst_load"]["load"] == 0.7 and t["burst_load"]["holds"]
    rows = {r["load"]: r for r in t["vs_static_rule"]["rows"]}
    assert not rows[0.3]["traded"] and rows[0.7]["rules"] == {"rule-x0.5": 1.0} and rows[0.7]["holds"]
    assert t["no_silent_downgrade"]["holds"]


def test_a_downgrade_the_metrics_missed_or_a_moved_best_request_is_a_failed_target():
    doc = synthetic_doc()
    doc["loads"][1]["servers"]["controller"]["counted_downgrades"] = 99
    doc["loads"][1]["servers"]["fixed-8"]["outcomes"][0]["reason"] = "slo"
    problems = analyse(doc)["targets"]["no_silent_downgrade"]["problems"]
    assert {p["server"] for p in problems} == {"controller", "fixed-8"}
    assert targets([])["burst_load"] == {"rows": [], "load": None, "holds": False}


def test_a_short_run_end_to_end(tmp_path, run_bench):
    """The whole benchmark over the simulated family at a cheap curve: every server answered, the
    files written, best never moved and every move counted."""
    bundles = family_bundles(tmp_path)
    out = tmp_path / "out"
    argv = ["slo", "--bundles", *bundles, "--curve", "0,0.5", "--objective-ms", "60", "--loads", "0.4",
            "--seconds", "3", "--burst-s", "0.5", "--thresholds", "0.5", "--out", str(out), "--no-score"]  # fmt: skip
    assert run_bench(argv) == 0
    doc = load(out)
    assert "outcomes" not in json.loads((out / "slo.json").read_text())["loads"][0]["servers"]["controller"]
    assert (out / "slo.md").read_text().startswith("# Serving to a latency objective")
    assert (out / "slo.png").stat().st_size > 0
    entry = doc["loads"][0]
    assert set(entry["servers"]) == {"fixed-8", "fixed-4", "rule-x0.5", "controller", "controller-reactive"}
    assert all(len(s["outcomes"]) == entry["arrivals"] > 0 for s in entry["servers"].values())
    assert doc["analysis"]["targets"]["no_silent_downgrade"]["holds"]
    assert "predicted from the evaluation rows" in markdown(doc)
    assert run_bench(["slo", "--report-only", "--out", str(out)]) == 0  # the figures again from the outcomes
