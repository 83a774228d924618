"""bench.sim_server: the real service over a simulated denoiser of a given cost (`fewstep bench step-sched
--simulate`, which starts it as `fewstep bench sim-server`)."""

from __future__ import annotations

import json
import urllib.request

import numpy as np
import pytest

from bench.sim_server import NAME, SimServerProcess, parse_cost, sim_pipeline


def test_a_cost_is_fixed_and_per_row_milliseconds_and_anything_else_is_refused_with_the_form():
    assert parse_cost("14,0.09") == (14.0, 0.09)
    assert parse_cost("0,8.6") == (0.0, 8.6)
    for bad in ("14", "14,0.09,1", "fast,1", "-1,0"):
        with pytest.raises(ValueError, match=r"FIXED_MS,PER_ROW_MS|>= 0"):
            parse_cost(bad)


def test_the_pipeline_is_the_teachers_shape_and_its_denoiser_costs_what_was_asked():
    """Guidance by two rows per image (as the teacher's bundle), 4 and 8 steps, the teacher's size."""
    pipe = sim_pipeline((14.0, 0.09))
    m = pipe.manifest
    assert (m.name, m.resolution, sorted(m.steps), m.guidance.network_input) == (NAME, 32, [4, 8], False)
    assert (pipe.denoiser.delay_s, pipe.denoiser.per_image_s) == pytest.approx((0.014, 0.00009))
    z = np.zeros((6, 3, 32, 32), np.float32)
    out = pipe.denoiser(z, np.full(6, 0.5, np.float32), np.zeros((6, 16, 4), np.float32), np.ones((6, 16), np.int64))
    assert out.shape == z.shape and pipe.denoiser.batch_sizes == [6]


def test_the_simulated_server_answers_generate_over_http(tmp_path):
    """A real uvicorn process: ready, one 4-step request answered with an image, the batch bound
    applied, and a SIGTERM exit."""
    server = SimServerProcess(tmp_path / "sim.log", "1,0.01", "step", max_batch_images=8)
    with server:
        body = json.dumps({"prompt": "a red circle", "model": NAME, "steps": 4, "seed": 1}).encode()
        req = urllib.request.Request(
            server.url + "/generate", body, {"Content-Type": "application/json", "Accept": "image/png"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200 and r.read()[:8] == b"\x89PNG\r\n\x1a\n"
        with urllib.request.urlopen(server.url + "/metrics", timeout=30) as r:
            assert f'model="{NAME}"' in r.read().decode()
        # a short closed loop through bench.http's phase: the backend's busy share comes from /metrics
        from bench.http import run_phase
        from bench.load import RequestClass, RequestMix

        mix = RequestMix([RequestClass.parse(f"model={NAME},steps=4,guidance=3")], ["a red circle"], 0)
        row = run_phase(server, mix, "closed", 4, 1.0)
        assert row["statuses"] == {"200": row["requests"]} and row["requests"] > 0
        assert 0.0 < row["backend_busy"] <= 1.05
    log = (tmp_path / "sim.log").read_text()
    assert "simulated denoiser: 1.00 ms + 0.010 ms per row per call" in log
    assert server.proc is not None and server.proc.returncode == 0
