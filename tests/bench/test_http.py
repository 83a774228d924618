"""`fewstep bench http`'s raw sampler (bench.http) on fake pipelines: one figure per (model, steps)
of the mix and batch size, and the back-to-back phase over the mix (the phases against a real
server run in tests/service/test_overload.py and tests/service/test_server.py)."""

from __future__ import annotations

import pytest

from bench.http import HttpBenchConfig, raw_phase, raw_sampler
from bench.load import RequestClass
from service.fakes import FakeDenoiser, fake_pipeline


def pipelines():
    return {
        "a": fake_pipeline("a", FakeDenoiser(), steps=(4, 8)),
        "b": fake_pipeline("b", FakeDenoiser(), steps=(2, 4), network_input=True),
    }


def test_the_raw_sampler_measures_each_model_and_step_count_of_the_mix_once():
    p = pipelines()
    classes = [RequestClass("a", 4, (1.0, 3.0, 5.0)), RequestClass("a", 4, n=2), RequestClass("b"), RequestClass()]
    cfg = HttpBenchConfig(raw_batches=(1, 3), raw_min_s=0.0)
    out, used = raw_sampler(cfg, classes, ["a red circle", "a blue square"], pipelines=p)
    assert used is p
    # "b" without steps runs its default (2); a class without a model runs the first pipeline's default
    assert list(out) == ["a@4", "b@2"]
    assert all(set(row) == {1, 3} and all(v > 0 for v in row.values()) for row in out.values())
    # the middle guidance of a class is the one timed: a teacher's batch is doubled at w = 3
    assert set(p["a"].denoiser.batch_sizes) == {2, 6} and set(p["b"].denoiser.batch_sizes) == {1, 3}


def test_a_raw_phase_runs_every_key_at_its_batch_size_and_reports_the_mix_rate():
    p = pipelines()
    classes = [RequestClass("a", 8), RequestClass("b", 4)]
    row = raw_phase(p, classes, ["a red circle"], {"a@8": 2, "b@4": 3}, seconds=0.2)
    assert set(row["per_key"]) == {"a@8", "b@4"} and all(v > 0 for v in row["per_key"].values())
    assert set(p["a"].denoiser.batch_sizes) == {4} and set(p["b"].denoiser.batch_sizes) == {3}
    harmonic = 2 / sum(1 / v for v in row["per_key"].values())  # equal weights: the harmonic mean
    assert row["images_per_s"] == pytest.approx(harmonic)
