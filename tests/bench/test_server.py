"""The benchmarked server's side (bench.server): batch histograms read from /metrics."""

from __future__ import annotations

import pytest

from bench.server import histogram_delta


def test_batch_histogram_deltas():
    before = {"m": {"1.0": 2, "2.0": 2, "4.0": 3, "+Inf": 3, "sum": 5, "count": 3}}
    after = {"m": {"1.0": 4, "2.0": 5, "4.0": 8, "+Inf": 8, "sum": 18, "count": 8}}
    d = histogram_delta(before, after)["m"]
    assert d["batches"] == 5 and d["mean_images"] == pytest.approx(13 / 5)
    assert d["by_le"] == {"1.0": 2, "2.0": 1, "4.0": 2}


def test_the_batch_histogram_is_read_per_model_from_a_scrape():
    text = "\n".join(
        [
            "# HELP fewstep_batch_size_images images per batch",
            "# TYPE fewstep_batch_size_images histogram",
            'fewstep_batch_size_images_bucket{le="1.0",model="a"} 2.0',
            'fewstep_batch_size_images_bucket{le="4.0",model="a"} 5.0',
            'fewstep_batch_size_images_bucket{le="+Inf",model="a"} 5.0',
            'fewstep_batch_size_images_sum{model="a"} 11.0',
            'fewstep_batch_size_images_count{model="a"} 5.0',
            "# HELP other_total something else",
            "# TYPE other_total counter",
            "other_total 3.0",
            "",
        ]
    )
    from bench.server import batch_histogram

    assert batch_histogram(text) == {"a": {"1.0": 2.0, "4.0": 5.0, "+Inf": 5.0, "sum": 11.0, "count": 5.0}}


def test_backend_seconds_sum_both_loops_histograms_over_models_from_the_services_own_metrics():
    """Read from what `service.metrics.Metrics` exports: batch compute (request level) and step
    iterations (step level), every model; other histograms (request duration) do not count."""
    from prometheus_client import generate_latest

    from bench.server import backend_seconds
    from service.metrics import Metrics

    m = Metrics()
    assert backend_seconds(generate_latest(m.registry).decode()) == 0.0
    m.batch_compute.labels("a").observe(0.25)
    m.batch_compute.labels("b").observe(0.5)
    m.step_iteration_seconds.labels("a").observe(0.125)
    m.request_duration.labels("/generate", "200", "a").observe(9.0)
    assert backend_seconds(generate_latest(m.registry).decode()) == pytest.approx(0.875)


def test_profiled_stacks_are_shared_out_by_category():
    from bench.server import categorize, summarize_stacks

    graph = "uvicorn/main.py:run;service/engine/runner.py:run;onnxruntime/session.py:run 6"
    maths = "threading.py:run;service/engine/runner.py:run;fewstep/sampler.py:step 3"
    png = "starlette/routing.py:app;service/api/encode.py:encode_image;PIL/Image.py:save 1"
    assert categorize(graph.split()[0]) == "denoiser (ORT run)"  # whatever called it
    assert categorize(maths.split()[0]) == "sampler maths (numpy)"  # the innermost matching frame
    assert categorize("a.py:f;b.py:g") == "other"
    s = summarize_stacks("\n".join([graph, maths, png, "garbage line"]), top=2)
    assert s["samples"] == 10
    assert s["by_category"] == pytest.approx(
        {"denoiser (ORT run)": 0.6, "sampler maths (numpy)": 0.3, "image encoding (PNG)": 0.1}
    )
    assert s["top_own"] == [("onnxruntime/session.py:run", 0.6), ("fewstep/sampler.py:step", 0.3)]
    assert summarize_stacks("") == {"samples": 0, "by_category": {}, "top_own": []}


@pytest.mark.parametrize("group", [True, False])
def test_a_server_that_forks_goes_down_whole_when_it_runs_in_its_own_group(tmp_path, group):
    """LitServe forks its API server and worker; a signal to the parent alone left them running
    (and spinning) after the benchmark. With `process_group` the exit signals the whole group."""
    import os
    import subprocess
    import sys
    import time

    from bench.server import ServerProcess

    pid_file = tmp_path / "child.pid"
    server = ServerProcess([], tmp_path / "server.log")
    server.process_group = group
    server.cmd = [
        sys.executable,
        "-c",
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(0)); "
        f"c = subprocess.Popen(['sleep', '120']); open({str(pid_file)!r}, 'w').write(str(c.pid)); time.sleep(120)",
    ]
    server.start()
    for _ in range(100):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    child = int(pid_file.read_text())
    server.__exit__(None, None, None)
    time.sleep(0.2)

    def alive(pid: int) -> bool:
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
        return bool(state) and not state.startswith("Z")

    try:
        assert alive(child) is not group  # the group goes down; a lone signal leaves the child
    finally:
        if alive(child):
            os.kill(child, 9)


def test_profiled_phase_pairs_the_phase_with_the_stacks_recorded_during_it(tmp_path, monkeypatch):
    import bench.server as srv

    out = tmp_path / "stacks.txt"
    order: list[str] = []

    class Recorder:  # py-spy: its file is complete once it has exited
        def wait(self, timeout: float) -> None:
            order.append("wait")
            out.write_text("main;service/text.py;run 3\nmain;numpy/x.py;f 1\n")

    def record(pid: int, seconds: float, path):
        order.append("record")
        return Recorder()

    def phase() -> dict:
        order.append("phase")
        return {"images_per_s": 5.0}

    server = srv.ServerProcess([], tmp_path / "server.log")
    server.proc = type("Proc", (), {"pid": 1})()
    monkeypatch.setattr(srv, "py_spy_record", record)
    got = srv.profiled_phase(server, 1.0, out, phase)
    assert order == ["record", "phase", "wait"]  # recording spans the phase
    assert got["phase"] == {"images_per_s": 5.0} and got["samples"] == 4
    assert got["by_category"]["text encoder (ORT)"] == pytest.approx(0.75)
    monkeypatch.setattr(srv, "py_spy_record", lambda *a: None)  # py-spy missing: the phase alone
    assert srv.profiled_phase(server, 1.0, out, phase) == {"phase": {"images_per_s": 5.0}}
