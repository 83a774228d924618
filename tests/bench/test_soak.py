"""`fewstep bench soak` (bench.soak): windows, the RSS trend and the checks on made-up figures, and a
short soak against a real server process over fake pipelines (tests/service/fault_server.py)."""

from __future__ import annotations

import json

import pytest

from bench.load import Outcome
from bench.soak import (
    Sample,
    SoakChecks,
    SoakConfig,
    Started,
    machine_slug,
    markdown,
    rss_trend,
    run_soak,
    verdict,
    windows,
)
from tests.service.fault_server import fault_server


def _outcome(t: float, latency: float, status: int = 200) -> Outcome:
    return Outcome(cls=0, images=1, status=status, start=100.0 + t, latency_s=latency)


def test_windows_cut_by_arrival_time_with_their_own_percentiles_and_errors():
    outcomes = [_outcome(t, 0.1) for t in range(0, 60)]  # one a second, 100 ms, first minute
    outcomes += [_outcome(60 + t, 0.3) for t in range(0, 60)]  # 300 ms in the second
    outcomes += [_outcome(130, 0.2, status=503), _outcome(140, 0.2, status=0)]
    samples = [Sample(t, 200.0 + t / 10, 0.0) for t in range(0, 181, 10)]
    rows = windows(outcomes, samples, begin=100.0, window_s=60, seconds=180)
    assert [r["requests"] for r in rows] == [60, 60, 2]
    assert rows[0]["latency_s"]["p99"] == pytest.approx(0.1) and rows[1]["latency_s"]["p50"] == pytest.approx(0.3)
    assert rows[2]["errors"] == 2 and rows[2]["statuses"] == {"0": 1, "503": 1} and rows[2]["latency_s"]["p99"] is None
    assert rows[0]["images_per_s"] == pytest.approx(1.0)
    assert [r["rss_mb"] for r in rows] == pytest.approx([206.0, 212.0, 218.0])  # the last sample within each


def test_a_short_tail_window_joins_the_one_before():
    outcomes = [_outcome(t, 0.1) for t in range(0, 65)]
    rows = windows(outcomes, [], begin=100.0, window_s=30, seconds=65)  # 30 + 30 + 5: the 5 s tail joins
    assert len(rows) == 2 and rows[-1]["end_s"] == 65 and sum(r["requests"] for r in rows) == 65


def test_rss_trend_measures_growth_after_the_first_window():
    # warm-up: +100 MiB in the first 5 minutes; then a leak of 20 MiB/hour
    samples = [Sample(t, 300.0 + 100 * t / 300, 0.0) for t in range(0, 300, 30)]
    samples += [Sample(t, 400.0 + 20 * (t - 300) / 3600, 0.0) for t in range(300, 1801, 30)]
    trend = rss_trend(samples, after_s=300)
    assert trend["slope_mb_per_hour"] == pytest.approx(20.0, rel=1e-6)
    assert trend["growth_mb"] == pytest.approx(20 * 1500 / 3600)
    assert trend["start_mb"] == 300.0 and trend["peak_mb"] == pytest.approx(400 + 20 * 1500 / 3600)
    flat = rss_trend([Sample(t, 500.0, 0.0) for t in range(0, 1801, 30)], after_s=300)
    assert flat["slope_mb_per_hour"] == 0.0 and flat["growth_mb"] == 0.0


def _doc(p99_first: float, p99_last: float, errors: int, slope: float, growth: float) -> dict:
    def row(p99: float, err: int) -> dict:
        return {"requests": 100, "errors": err, "latency_s": {"p50": p99 / 2, "p95": p99, "p99": p99}}

    return {
        "windows": [row(p99_first, 0), row(p99_last, errors)],
        "rss": {"slope_mb_per_hour": slope, "growth_mb": growth},
    }


def test_the_checks_flag_drift_errors_and_growth_and_pass_a_steady_run():
    steady = verdict(_doc(0.2, 0.22, 0, 1.0, 2.0), SoakChecks())
    assert all(c["ok"] for c in steady.values()) and steady["p99_drift"]["value"] == pytest.approx(1.1)
    bad = verdict(_doc(0.2, 0.5, 3, 80.0, 150.0), SoakChecks())
    assert {k for k, c in bad.items() if not c["ok"]} == {
        "p99_drift",
        "error_rate",
        "rss_slope_mb_per_hour",
        "rss_growth_mb",
    }
    assert bad["error_rate"]["value"] == pytest.approx(3 / 200)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="window"):
        SoakConfig(minutes=1, window_s=300)
    with pytest.raises(ValueError, match="load"):
        SoakConfig(load=0)
    with pytest.raises(ValueError, match="rate"):
        SoakConfig(rate=-1)


def test_machine_slug_is_a_file_name():
    slug = machine_slug()
    assert slug and all(c.isalnum() or c == "-" for c in slug) and slug.endswith("c")


def test_a_short_soak_against_a_real_server(tmp_path):
    """20 s at 70% of a fake server's capacity, 5 s windows: every window filled, no errors, RSS
    sampled from the live process, the report written and readable."""
    cfg = SoakConfig(
        mix=("model=fake,steps=4",),
        minutes=20 / 60,
        window_s=5.0,
        sample_s=1.0,
        capacity_clients=8,
        capacity_s=3.0,
        prompts=8,
    )
    with fault_server(tmp_path, per_call_s=0.005, max_batch_images=8, max_wait_s=0.0) as server:
        doc = run_soak(cfg, Started(server.url, server.proc.pid), tmp_path / "soak.json")
    assert doc["capacity"]["images_per_s"] > 0 and doc["capacity"]["ok"] > 0
    assert doc["rate_requests_per_s"] == pytest.approx(0.7 * doc["capacity"]["images_per_s"])
    assert len(doc["windows"]) == 4 and all(w["requests"] > 0 for w in doc["windows"])
    assert all(w["errors"] == 0 for w in doc["windows"]), [w["statuses"] for w in doc["windows"]]
    assert len(doc["samples"]) >= 15 and all(s["rss_mb"] > 10 for s in doc["samples"])
    assert doc["samples"][-1]["t_s"] >= 19
    assert set(doc["checks"]) >= {"rss_growth_mb", "p99_drift", "error_rate"}
    assert doc["checks"]["error_rate"]["ok"]
    assert json.loads((tmp_path / "soak.json").read_text())["windows"] == doc["windows"]
    doc["machine"]["name"] = "test"
    text = markdown(doc)
    assert "| 0-0.0833 min |" in text and "p99 ms" in text and "error_rate" in text
