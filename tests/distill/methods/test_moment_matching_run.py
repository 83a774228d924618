"""The shapes-world distillation runner on a tiny random teacher: isolation of updates, a short
end-to-end run per method that writes a student that samples and exports, and resume."""

import json

import numpy as np
import pytest
import torch

from distill.kit.checkpoint import load_denoiser
from distill.kit.data import build_dataset
from distill.methods.config import load_distill_config
from distill.methods.mm_alt import MmAltRun
from distill.methods.registry import METHODS, distill
from distill.methods.runloop import RunOptions
from tests.conftest import make_packed_model
from tests.distill.methods.conftest import assert_resumed_exactly, same, snapshot


def test_each_update_moves_only_its_own_network(teacher):
    cfg = load_distill_config("tiny", None, ["steps=2", "data.resolution=16"])
    run = MmAltRun(cfg, teacher, torch.device("cpu"))
    batches = iter(build_dataset(cfg.data.model_copy(update={"resolution": 16}), 4))
    student, aux, t0 = snapshot(run.student), snapshot(run.aux), snapshot(run.teacher)
    run.aux_update(next(batches), cfg.lr)
    assert same(student, snapshot(run.student)) and same(t0, snapshot(run.teacher))
    assert not same(aux, snapshot(run.aux))
    aux = snapshot(run.aux)
    run.student_update(next(batches), cfg.lr)
    assert same(aux, snapshot(run.aux)) and same(t0, snapshot(run.teacher))
    assert not same(student, snapshot(run.student))


def test_students_start_equal_to_the_teacher(teacher):
    run = MmAltRun(load_distill_config("tiny"), teacher, torch.device("cpu"))
    z, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    states, mask = torch.randn(3, 16, 32), torch.ones(3, 16, dtype=torch.bool)
    with torch.no_grad():
        ref = run.teacher(z, t, states, mask)
        for w in (1.0, 4.0):
            torch.testing.assert_close(run.student(z, t, states, mask, torch.full((3,), w)), ref)


@pytest.mark.slow  # 20-40 s each (export included): `make test-slow`, so the default suite stays under 15 minutes
@pytest.mark.parametrize("method", ["mm-alt", "mm-param"])
def test_a_short_distillation_writes_a_student_that_samples_and_exports(method, teacher, tmp_path):
    from distill.export.bundle import ExportOptions, export_bundle
    from fewstep.bundle import load_manifest
    from fewstep.rng import SeededNoise
    from fewstep.sampler import ancestral_sample

    cfg = load_distill_config("tiny", None, [f"method={method}", "steps=2"])
    summary = distill(cfg, teacher, tmp_path / "run", RunOptions(progress=False))
    assert summary["finished"] and summary["iters"] == 4 and summary["network_forward_images"] > 0
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [2, 4] and all(np.isfinite(r["student_loss"]) for r in rows)
    student, scfg = load_denoiser(tmp_path / "run" / "student")
    assert scfg.model.guidance_input
    with torch.no_grad():
        from distill.kit.guidance import GuidedDenoiser

        cond = type("C", (), {})()
        cond.states, cond.mask = torch.randn(2, 16, 32), torch.ones(2, 16, dtype=torch.bool)
        x = ancestral_sample(GuidedDenoiser(student), 2, cond, 3.0, SeededNoise([1, 2], (3, 16, 16)), torch.zeros(1))
    assert x.shape == (2, 3, 16, 16) and torch.isfinite(x).all()
    m = export_bundle(tmp_path / "run" / "student", tmp_path / "bundle", ExportOptions(cache_dir=tmp_path / "cache"))
    assert sorted(m.steps) == [2] and m.guidance.network_input
    assert (m.guidance.min, m.guidance.default, m.guidance.max) == (1.0, 3.0, 5.0)
    assert load_manifest(tmp_path / "bundle").name == "bundle"


def test_an_interrupted_distillation_resumes_exactly(teacher, tmp_path):
    cfg = load_distill_config("tiny", None, ["iters=4", "ckpt_every=2"])
    distill(cfg, teacher, tmp_path / "a", RunOptions(progress=False))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False, stop_at=2))
    assert not (tmp_path / "b" / "student").exists()
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False))
    assert_resumed_exactly(tmp_path / "a", tmp_path / "b")


def test_a_run_leaves_no_data_workers_behind(teacher, tmp_path):
    """The run's loader workers stop when it returns, finished or stopped early (not at a later
    garbage collection: that stalled the next test for 20 s)."""
    import multiprocessing

    cfg = load_distill_config("tiny", None, ["data.num_workers=2"])
    before = set(multiprocessing.active_children())
    distill(cfg, teacher, tmp_path / "r", RunOptions(progress=False, stop_at=2))
    assert not set(multiprocessing.active_children()) - before


def test_a_run_resumed_with_another_teacher_is_refused(teacher, tiny_bert_dir, tmp_path):
    from distill.kit.config import ConfigError

    other = make_packed_model(tmp_path / "other", tiny_bert_dir, seed=5)
    cfg = load_distill_config("tiny", None, ["iters=4", "ckpt_every=2"])
    distill(cfg, teacher, tmp_path / "r", RunOptions(progress=False, stop_at=2))
    with pytest.raises(ConfigError, match="another teacher"):
        distill(cfg, other, tmp_path / "r", RunOptions(progress=False))
    assert distill(cfg, teacher, tmp_path / "r", RunOptions(progress=False))["finished"]


def test_config_errors_name_the_key(teacher, tmp_path):
    from distill.kit.config import ConfigError

    with pytest.raises(ConfigError, match="guidance_min"):
        load_distill_config("tiny", None, ["guidance_min=4", "guidance_default=3"])
    with pytest.raises(ConfigError, match="steps"):
        load_distill_config("tiny", None, ["steps=0"])
    cfg = load_distill_config("tiny")
    distill(cfg, teacher, tmp_path / "r", RunOptions(progress=False, stop_at=2))
    with pytest.raises(ConfigError, match="lr"):
        distill(cfg.model_copy(update={"lr": 1.0}), teacher, tmp_path / "r", RunOptions(progress=False))


ISSUE14 = [
    "ema_decay=0.5",
    "weighting=sbin",
    "sbin_decay=0.5",
    "aux_weighting=teacher",
    "teacher_weight_cap=100",
    "time_sampling=grid",
    "aux_steps=2",
    "s_bins=4",
    "min_lr_ratio=0.1",
]


def test_mm_alt_with_ema_sbin_teacher_weighting_and_grid_times_resumes_exactly(teacher, tmp_path):
    """The issue-14 options together: the EMA and the s-bin normaliser are part of the checkpoint
    (an interrupted run ends bit-identical), student/ is the EMA and student-raw/ the raw weights,
    and every logged row carries the per-s-bin signal."""
    cfg = load_distill_config("tiny", None, ["steps=2", "iters=4", "ckpt_every=2", *ISSUE14])
    distill(cfg, teacher, tmp_path / "a", RunOptions(progress=False))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False, stop_at=3))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False))
    for packed in ("student", "student-raw"):
        assert_resumed_exactly(tmp_path / "a", tmp_path / "b", packed)
    ema = load_denoiser(tmp_path / "a" / "student")[0].state_dict()
    raw = load_denoiser(tmp_path / "a" / "student-raw")[0].state_dict()
    assert not all(torch.equal(ema[k], raw[k]) for k in ema)
    rows = [json.loads(r) for r in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        assert len(r["sbin_gap"]) == 4 and len(r["sbin_energy"]) == 4
        assert sum(r["sbin_energy"]) == pytest.approx(1.0)
        assert all(g is None or g >= 0 for g in r["sbin_gap"]) and r["lr"] > 0
    # grid times at K = 2: s in [0, 0.5) or [0.5, 1), so with 4 bins every bin can be hit; at least one is
    assert any(g is not None for g in rows[-1]["sbin_gap"])


@pytest.mark.slow  # about 40 s: `make test-slow`
def test_mm_param_uses_the_ema_and_the_snr_cap_weighting(teacher, tmp_path):
    cfg = load_distill_config(
        "tiny", None, ["method=mm-param", "steps=2", "ema_decay=0.5", "weighting=snr-cap", "snr_cap=5"]
    )
    summary = distill(cfg, teacher, tmp_path / "p", RunOptions(progress=False))
    assert summary["finished"] and (tmp_path / "p" / "student-raw" / "model.safetensors").is_file()
    rows = [json.loads(r) for r in (tmp_path / "p" / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["student_loss"]) and len(r["sbin_energy"]) == 10 for r in rows)


@pytest.mark.parametrize(
    "overrides, key",
    [
        (["method=mm-param", "aux_steps=2"], "aux_steps"),
        (["method=mm-param", "aux_lr=1e-3"], "aux_lr"),
        (["method=mm-param", "aux_weighting=teacher"], "aux_weighting"),
        (["method=mm-alt", "teacher_steps=32"], "teacher_steps"),
        (["method=mm-alt", "cd_target_ema=0.9"], "cd_target_ema"),
        (["method=mm-alt", "teacher_weight_cap=10"], "teacher_weight_cap"),
        (["method=mm-alt", "snr_cap=3"], "snr_cap"),
        (["method=mm-alt", "weighting=batch", "sbin_decay=0.5"], "sbin_decay"),
        (["method=pd", "weighting=rms"], "weighting"),
        (["method=pd", "time_sampling=grid"], "time_sampling"),
        (["method=cd", "s_bins=5"], "s_bins"),
        (["method=pd", "cd_weighting=x"], "cd_weighting"),
        (["method=mm-alt", "data.cond_dropout=0.1"], "data.cond_dropout"),
    ],
)
def test_a_setting_the_method_ignores_is_an_error_naming_key_and_method(overrides, key):
    from distill.kit.config import ConfigError

    method = overrides[0].split("=")[1]
    with pytest.raises(ConfigError, match=rf"{key} is set but {method}"):
        load_distill_config("tiny", None, overrides)


def test_settings_each_method_uses_are_accepted():
    for over in (
        ["method=mm-alt", "aux_steps=2", "aux_weighting=teacher", "teacher_weight_cap=10", "ema_decay=0.9"],
        ["method=mm-param", "teacher_weight_cap=10", "weighting=sbin", "sbin_decay=0.9", "time_sampling=grid"],
        ["method=mm-alt", "weighting=snr-cap", "snr_cap=3", "data.resolution=16"],
        ["method=pd", "steps=2", "teacher_steps=8", "ema_decay=0.9", "min_lr_ratio=0.1"],
        ["method=cd", "cd_target_ema=0.9", "cd_weighting=x", "ema_decay=0.9"],
    ):
        load_distill_config("tiny", None, over)
    assert load_distill_config("tiny", None, ["data.resolution=16"]).data.seed == 1  # merged over the defaults


def test_guided_warm_start_fits_the_guided_teacher_then_seeds_the_auxiliary_and_ema(teacher):
    cfg = load_distill_config("tiny", None, ["steps=2", "data.resolution=16", "warm_start=3", "iters=5", "lr=1e-3"])
    run = MmAltRun(cfg, teacher, torch.device("cpu"))
    batches = iter(build_dataset(cfg.data.model_copy(update={"resolution": 16}), 4))
    aux0 = snapshot(run.aux)
    rows = [run.iteration(batches, step) for step in range(3)]
    assert all(set(r) == {"warm_loss", "loss", "lr"} for r in rows)  # regression rows, no moment matching yet
    # After the last warm-start update the auxiliary and the EMA start from the fitted student.
    student = snapshot(run.student)
    assert same(student, snapshot(run.aux)) and same(student, snapshot(run.ema))
    assert not same(aux0, student)
    row = run.iteration(batches, 3)
    assert "gap_rms" in row and "warm_loss" not in row  # moment matching from here on


def test_the_warm_start_moves_the_student_toward_the_guided_teacher(teacher):
    w4 = ["guidance_min=4", "guidance_max=4", "guidance_default=4"]
    cfg = load_distill_config("tiny", None, ["steps=2", "data.resolution=16", "warm_start=40", "iters=41",
                                             "lr=3e-3", "warmup=0", *w4])  # fmt: skip
    run = MmAltRun(cfg, teacher, torch.device("cpu"))
    batches = iter(build_dataset(cfg.data.model_copy(update={"resolution": 16}), 8))
    losses = [run.iteration(batches, step)["warm_loss"] for step in range(40)]
    # w = 4 is far from the unguided start: the regression must close much of that gap.
    assert np.mean(losses[-8:]) < 0.7 * np.mean(losses[:8])


@pytest.mark.parametrize(
    "overrides",
    [["method=mm-alt"], ["method=mm-alt", "aux_steps=2", "warm_start=2"], ["method=mm-param", "warm_start=1"]],
)
def test_images_for_counts_the_training_images_a_run_draws(teacher, tmp_path, overrides):
    cfg = load_distill_config("tiny", None, ["steps=2", "data.resolution=16", "iters=4", *overrides])
    summary = distill(cfg, teacher, tmp_path / "run", RunOptions(progress=False))
    assert summary["image_passes"] == METHODS[cfg.method].run.images_for(cfg, 4)
    assert summary["evals_per_image_pass"] == pytest.approx(sum(summary["evals"].values()) / summary["image_passes"])
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["images"] == summary["image_passes"]


def test_aux_weighting_snr_cap_weighs_the_auxiliary_like_the_student(teacher, monkeypatch):
    import distill.methods.mm_alt as mod

    seen = {}

    def spy(pred, x_tilde, target, weight=None, **kw):
        seen["weight"] = weight
        return real(pred, x_tilde, target, weight, **kw)

    real = mod.aux_loss
    monkeypatch.setattr(mod, "aux_loss", spy)
    cfg = load_distill_config("tiny", None, ["steps=2", "data.resolution=16", "weighting=snr-cap",
                                             "aux_weighting=snr-cap", "snr_cap=3"])  # fmt: skip
    run = MmAltRun(cfg, teacher, torch.device("cpu"))
    run.aux_update(next(iter(build_dataset(cfg.data.model_copy(update={"resolution": 16}), 8))), cfg.lr)
    w = seen["weight"]
    assert w is not None and float(w.max()) <= 3.0 and float(w.min()) >= 1.0
