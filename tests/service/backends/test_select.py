"""`backend.kind = "auto"`: the choice logic with fakes (quality gate, tolerance, interleaving,
skipped candidates) and the loader/label wiring on a real tiny bundle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from service.backends.base import BackendError, BackendSettings
from service.backends.select import Candidate, choose, quality_allows, select_denoiser, time_interleaved
from service.fakes import FakeDenoiser, fake_manifest, precision_check
from tests.service.backends.conftest import NO_OPENVINO

ORT, OV32, OV16 = Candidate("onnxruntime", "fp32"), Candidate("openvino", "fp32"), Candidate("openvino", "bf16")
ORDER = [ORT, OV32, OV16]


def test_choose_takes_the_fastest_beyond_the_tolerance():
    assert choose({ORT: 0.100, OV32: 0.090, OV16: 0.040}, ORDER) == OV16
    assert choose({ORT: 0.100, OV32: 0.090}, ORDER) == OV32


def test_choose_prefers_the_earlier_candidate_within_the_tolerance():
    # 3% apart: noise on a shared machine; the preferred (earlier) path keeps the choice
    assert choose({ORT: 0.100, OV32: 0.097, OV16: 0.098}, ORDER) == ORT
    assert choose({ORT: 0.100, OV32: 0.097}, ORDER, tolerance=0.0) == OV32


def test_choose_needs_a_timed_candidate():
    with pytest.raises(BackendError, match="no backend candidate"):
        choose({}, ORDER)


def test_fp32_is_always_allowed_and_an_unmeasured_reduced_precision_never():
    m = fake_manifest()
    assert quality_allows(m, OV32)[0] and quality_allows(m, ORT)[0]
    # the constant per-backend recommendation is no permission: only a measurement of this bundle is
    assert m.precision["torch"] == "bf16"
    ok, why = quality_allows(m, OV16)
    assert not ok and "not measured on this bundle" in why
    # a measurement of another path does not stand in for this one
    other = fake_manifest(reduced_precision=[precision_check("torch-bf16")])
    ok, why = quality_allows(other, OV16)
    assert not ok and "measured: torch-bf16" in why


def test_a_bundle_measured_good_is_allowed_bf16_and_one_measured_bad_is_not():
    good = fake_manifest(reduced_precision=[precision_check("openvino-bf16", drop=0.005)])
    assert quality_allows(good, OV16) == (True, "")
    bad = fake_manifest(reduced_precision=[precision_check("openvino-bf16", drop=0.08)])
    ok, why = quality_allows(bad, OV16)
    assert not ok and "below the threshold" in why and "+0.080" in why
    blurred = fake_manifest(reduced_precision=[precision_check("openvino-bf16", pixels=30.0)])
    assert not quality_allows(blurred, OV16)[0]
    # a measurement of an earlier export (another denoiser graph) permits nothing
    stale = fake_manifest(reduced_precision=[precision_check("openvino-bf16", denoiser_sha256="0ld")])
    ok, why = quality_allows(stale, OV16)
    assert not ok and "earlier export's denoiser graph" in why


def test_a_measurement_cannot_claim_a_pass_its_figures_refuse():
    from pydantic import ValidationError

    from fewstep.bundle import PrecisionCheck

    bad = precision_check("openvino-bf16", drop=0.08)
    assert not bad.passed
    with pytest.raises(ValidationError, match="contradicts the figures"):
        PrecisionCheck.model_validate({**bad.model_dump(), "passed": True})
    # the threshold's edge: a drop at the limit passes, its upper bound past 0.05 does not
    assert precision_check(drop=0.02).passed
    assert not PrecisionCheck.model_validate(
        {**precision_check(drop=0.0).model_dump(), "adherence_drop_ci": (-0.01, 0.06), "passed": False}
    ).passed


def test_time_interleaved_rotates_and_keeps_the_fastest_round():
    calls: list[str] = []
    clock = itertools.count(0.0, 0.5).__next__  # every clock read advances 0.5 s: each call "takes" 0.5 s
    runs = {c: (lambda c=c: calls.append(c.label)) for c in ORDER}
    seconds = time_interleaved(runs, rounds=3, clock=clock, min_round_s=0.0)
    assert seconds == {c: 0.5 for c in ORDER}
    assert calls[:3] == [c.label for c in ORDER]
    assert calls[3:6] == [c.label for c in (OV32, OV16, ORT)]  # round 2 starts one later


def test_a_round_repeats_a_short_call_until_its_time_floor_and_scores_the_mean():
    clock = _NoisyClock(seed=0)
    calls = {c: 0 for c in ORDER}

    def run(c: Candidate) -> None:
        calls[c] += 1
        clock.charge(0.01)

    seconds = time_interleaved({c: (lambda c=c: run(c)) for c in ORDER}, rounds=2, clock=clock, min_round_s=0.1)
    assert all(16 <= n <= 22 for n in calls.values())  # about 0.1 s / 0.01 s calls in each of 2 rounds
    assert all(0.01 <= s <= 0.0125 for s in seconds.values())  # a mean call, not one lucky sample


def test_a_path_slow_on_its_first_calls_is_judged_at_its_steady_speed():
    """OpenVINO compiles kernels on its first calls at a shape: one warm-up call left its bf16 path
    timed at 2.6x its steady time, and the selection chose fp32 paths."""
    m = fake_manifest(resolution=8, max_tokens=8, hidden=4, reduced_precision=[precision_check()])
    clock = _NoisyClock(seed=1)
    steady = {"onnxruntime-fp32": 0.010, "openvino-bf16": 0.004}

    class Cold(FakeDenoiser):
        def __call__(self, z, t, states, mask, w=None):
            self.n = getattr(self, "n", 0) + 1
            cold = self.label.startswith("openvino") and self.n <= 3
            clock.charge(steady[self.label] * (3.0 if cold else 1.0))
            return super().__call__(z, t, states, mask, w)

    def build(s: BackendSettings):
        den = Cold()
        den.label = f"{s.kind}-{s.precision}"
        return den

    def inputs(b: int):
        return [np.zeros((b, 3, 8, 8), np.float32), np.zeros(b, np.float32), np.zeros((b, 8, 4), np.float32),
                np.ones((b, 8), np.int64)]  # fmt: skip

    settings = _settings(auto_candidates=("onnxruntime-fp32", "openvino-bf16"))
    _, sel = select_denoiser(m, settings, build, inputs, rounds=1, clock=clock, warmup=1, min_round_s=0.0)
    assert sel.chosen == ORT  # the old recipe: one warm call, one timed call
    _, sel = select_denoiser(m, settings, build, inputs, clock=clock)
    assert sel.chosen == OV16


class _NoisyClock:
    """A fake clock: each timed call costs the candidate's true time times a random slowdown of up
    to 25% (other work on a shared machine only ever adds time)."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def charge(self, true_s: float) -> None:
        self.now += true_s * (1 + 0.25 * self.rng.random())


@pytest.mark.parametrize("true", [{ORT: 0.100, OV32: 0.098, OV16: 0.045}, {ORT: 0.100, OV32: 0.101, OV16: 0.099}])
def test_noisy_timings_give_the_same_choice_across_seeds(true):
    picks = set()
    for seed in range(20):
        clock = _NoisyClock(seed)
        runs = {c: (lambda c=c, clock=clock: clock.charge(true[c])) for c in ORDER}
        picks.add(choose(time_interleaved(runs, rounds=5, clock=clock), ORDER, tolerance=0.3))
    assert len(picks) == 1


def _settings(**kw) -> BackendSettings:
    return BackendSettings(kind="auto", **kw)


def _paths(speed: dict[str, float], clock: _NoisyClock, built: list[str], fail: set[str]):
    """A `build` for `select_denoiser`: fake denoisers that charge `clock` `speed[path]` seconds an
    image, record each path built in `built`, and refuse the paths in `fail`."""

    class Timed(FakeDenoiser):
        def __call__(self, z, t, states, mask, w=None):
            clock.charge(speed[self.label] * z.shape[0])
            return super().__call__(z, t, states, mask, w)

    def build(s: BackendSettings):
        label = f"{s.kind}-{s.precision}"
        built.append(label)
        if label in fail:
            raise BackendError(f"{label}: openvino missing here")
        den = Timed()
        den.label = label
        return den

    return build


def _inputs(b: int):
    rng = np.random.default_rng(0)
    return [
        rng.standard_normal((b, 3, 8, 8), dtype=np.float32),
        rng.random(b, dtype=np.float32),
        rng.standard_normal((b, 8, 4), dtype=np.float32),
        np.ones((b, 8), np.int64),
    ]


def test_select_denoiser_builds_allowed_candidates_and_keeps_the_fastest():
    m = fake_manifest(resolution=8, max_tokens=8, hidden=4, reduced_precision=[precision_check()])
    speed = {"onnxruntime-fp32": 0.004, "openvino-fp32": 0.003, "openvino-bf16": 0.001}  # s per image
    clock = _NoisyClock(seed=0)
    built: list[str] = []
    build, inputs = _paths(speed, clock, built, {"openvino-fp32"}), _inputs

    den, sel = select_denoiser(m, _settings(auto_batch_images=4), build, inputs, rounds=2, clock=clock)
    assert built == ["onnxruntime-fp32", "openvino-fp32", "openvino-bf16"]
    assert sel.chosen == OV16 and den.label == "openvino-bf16"
    assert set(sel.seconds) == {ORT, OV16} and "openvino missing" in sel.refused[OV32]
    assert den.batch_sizes[-1] == 8  # a teacher: 4 images timed as the doubled guidance batch
    assert "chose openvino-bf16" in sel.summary()
    # the same bundle measured bad in bf16 never builds it, though bf16 is the fastest path here
    for bad in (
        fake_manifest(resolution=8, max_tokens=8, hidden=4, reduced_precision=[precision_check(drop=0.1)]),
        fake_manifest(resolution=8, max_tokens=8, hidden=4),  # never measured
    ):
        built.clear()
        _, sel = select_denoiser(bad, _settings(auto_candidates=("onnxruntime-fp32", "openvino-bf16")), build, inputs)
        assert built == ["onnxruntime-fp32"] and sel.chosen == ORT and OV16 in sel.refused


def test_no_runnable_candidate_is_a_clear_error():
    def build(s):
        raise BackendError(f"{s.kind} cannot run")

    with pytest.raises(BackendError, match=r"no candidate can run here.*onnxruntime cannot run"):
        select_denoiser(fake_manifest(), _settings(), build, lambda b: [])


def test_auto_on_a_real_bundle_serves_an_allowed_path_and_labels_it(tiny_bundle):
    from service.loader import load_pipeline
    from service.pipeline import ImageJob

    settings = _settings(auto_candidates=("onnxruntime-fp32", "openvino-fp32"), auto_batch_images=2)
    p = load_pipeline(tiny_bundle, settings)
    assert p.backend in ("auto:onnxruntime-fp32", "auto:openvino-fp32")
    images = p.generate([ImageJob("a red circle", 1, 2, 3.0)])
    assert images.shape == (1, p.manifest.resolution, p.manifest.resolution, p.manifest.channels)


class _Slowed:
    """A real denoiser whose every call costs `delay_s` more: a machine where that path is slow."""

    def __init__(self, inner, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def __call__(self, *args, **kwargs):
        import time

        time.sleep(self.delay_s)
        return self.inner(*args, **kwargs)


@NO_OPENVINO
@pytest.mark.parametrize(("slow", "expected"), [("onnxruntime", OV32), ("openvino", ORT)])
def test_load_pipeline_auto_serves_the_path_that_is_fastest_here(tiny_bundle, monkeypatch, slow, expected):
    """The whole wiring (load_pipeline -> select_denoiser_for -> the real backends) on a real bundle,
    on a fake machine where one runtime is 50 ms a call slower: the served path is the other one,
    whichever it is. A selector that always served ONNX Runtime (or always OpenVINO) fails one case."""
    import service.loader as loader
    from service.pipeline import ImageJob

    real = loader.make_denoiser

    def make(bundle, manifest, settings):
        den = real(bundle, manifest, settings)
        return _Slowed(den, 0.05) if settings.kind == slow else den

    monkeypatch.setattr(loader, "make_denoiser", make)
    settings = _settings(auto_candidates=("onnxruntime-fp32", "openvino-fp32"), auto_batch_images=2)
    p = loader.load_pipeline(tiny_bundle, settings, warmup=())
    assert p.backend == f"auto:{expected.label}" and p.identity["path"] == expected.label
    assert not isinstance(p.denoiser, _Slowed)  # the fast one, not the slowed wrapper
    images = p.generate([ImageJob("a red circle", 1, 2, 3.0)])
    assert images.shape == (1, p.manifest.resolution, p.manifest.resolution, p.manifest.channels)


def test_a_tuning_cache_keeps_the_timings_and_later_starts_build_only_the_choice(tmp_path):
    from service.tuning import TuningCache

    m = fake_manifest(resolution=8, max_tokens=8, hidden=4, reduced_precision=[precision_check()])
    built: list[str] = []
    speed = {"onnxruntime-fp32": 0.004, "openvino-fp32": 0.003, "openvino-bf16": 0.001}
    clock = _NoisyClock(seed=1)
    fail: set[str] = set()

    build, inputs = _paths(speed, clock, built, fail), _inputs

    def start(**kw):
        built.clear()
        tuning = TuningCache(tmp_path / "tuning.json", machine={"cpu": "test"}, **kw)
        return select_denoiser(m, _settings(), build, inputs, rounds=2, clock=clock, tuning=tuning)

    den, sel = start()
    assert len(built) == 3 and not sel.reused and sel.chosen == OV16
    speed["onnxruntime-fp32"] = 0.0001  # this start's timings would choose differently ...
    den, sel = start()
    assert built == ["openvino-bf16"] and sel.reused and sel.chosen == OV16  # ... but it times nothing
    assert den.batch_sizes == [] and "from the tuning cache" in sel.summary()
    # the cached choice cannot be built any more: time afresh (and keep the new timings)
    fail.add("openvino-bf16")
    den, sel = start()
    assert built == ["openvino-bf16", "onnxruntime-fp32", "openvino-fp32", "openvino-bf16"]
    assert not sel.reused and sel.chosen == ORT
    # refresh: time again although the cache has an entry
    fail.clear()
    _, sel = start(refresh=True)
    assert len(built) == 3 and not sel.reused
