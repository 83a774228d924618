"""Adversarial diffusion distillation (Sauer et al. 2023): the hinge and R1 terms on known values,
the warm-up of the adversarial weight, the teacher-feature discriminator (gradients reach the
image, never the frozen teacher), a discriminator that learns to tell two distributions apart,
the config, and a tiny end-to-end run through `fewstep distill` that resumes exactly, discriminator
included, and exports a bundle."""

import json

import numpy as np
import pytest
import torch

from distill.kit.checkpoint import load_denoiser
from distill.kit.config import ConfigError
from distill.methods.adversarial import adversarial_weight, distillation_loss
from distill.methods.config import load_distill_config
from distill.methods.discriminator import (
    FeatureDiscriminator,
    feature_channels,
    hinge_d_loss,
    hinge_g_loss,
    r1_penalty,
    teacher_features,
)
from distill.methods.registry import distill
from distill.methods.runloop import RunOptions
from fewstep.schedule import alpha_sigma
from tests.distill.methods.conftest import assert_resumed_exactly


def test_hinge_losses_on_known_logits():
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 1.0])
    # relu(1 - real) = [0, 0.5, 2], relu(1 + fake) = [0, 1, 2]
    assert hinge_d_loss(real, fake).item() == pytest.approx(2.5 / 3 + 3 / 3)
    assert hinge_g_loss(fake).item() == pytest.approx(2.0 / 3)


def test_r1_of_a_linear_discriminator_is_its_squared_weight_norm():
    a, b = torch.tensor([1.0, -2.0]), torch.tensor([[0.5], [3.0]])
    f1 = torch.randn(4, 2, requires_grad=True)
    f2 = torch.randn(4, 2, 1, requires_grad=True)
    logits = f1 @ a + (f2 * b).sum((1, 2))
    assert r1_penalty(logits, [f1, f2]).item() == pytest.approx(1 + 4 + 0.25 + 9)


def test_the_adversarial_weight_ramps_from_zero():
    cfg = load_distill_config("tiny", None, ["method=add", "adv_weight=0.4", "adv_warmup=10"])
    assert [adversarial_weight(s, cfg) for s in (0, 5, 10, 50)] == pytest.approx([0.0, 0.2, 0.4, 0.4])
    cfg = load_distill_config("tiny", None, ["method=add", "adv_weight=0.4", "adv_warmup=0"])
    assert adversarial_weight(0, cfg) == 0.4


def test_the_distillation_loss_weighs_by_alpha_s():
    x_hat, x_t = torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)
    s = torch.tensor([0.1, 0.9])
    alpha, _ = alpha_sigma(np.array([0.1, 0.9]))  # the schedule's float64 alpha_s
    x_hat[1] = 2.0  # the second example's squared error is 4
    assert distillation_loss(x_hat, x_t, s).item() == pytest.approx((alpha[0] + 4 * alpha[1]) / 2, rel=1e-5)


def test_teacher_features_pass_gradients_to_the_image_but_not_to_the_teacher(teacher):
    net = load_denoiser(teacher)[0]
    res = net.cfg.resolution
    z = torch.randn(2, 3, res, res, requires_grad=True)
    states, mask = torch.randn(2, 16, 32), torch.ones(2, 16, dtype=torch.bool)
    feats = teacher_features(net, z, torch.tensor([0.2, 0.4]), states, mask)
    assert [f.shape[1] for f in feats] == feature_channels(net)
    assert [f.shape[-1] for f in feats] == [res, res // 2, res // 2]  # two down levels, then the middle
    disc = FeatureDiscriminator.for_teacher(net, 16, seed=0)
    disc(feats, states.mean(1)).sum().backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())
    assert not net.net.down[0].blocks[-1]._forward_hooks  # the hooks are gone after the call


def test_the_heads_learn_to_tell_two_feature_distributions_apart():
    torch.manual_seed(0)
    disc = FeatureDiscriminator([4], hidden=8, text_dim=3)
    opt = torch.optim.Adam(disc.parameters(), lr=1e-2, betas=(0.0, 0.99))
    text = torch.zeros(16, 3)
    for _ in range(60):
        real, fake = torch.randn(16, 4, 2, 2) + 1.0, torch.randn(16, 4, 2, 2) - 1.0
        loss = hinge_d_loss(disc([real], text), disc([fake], text))
        opt.zero_grad()
        loss.backward()
        opt.step()
    real, fake = torch.randn(16, 4, 2, 2) + 1.0, torch.randn(16, 4, 2, 2) - 1.0
    with torch.no_grad():
        assert (disc([real], text) > 0).float().mean() > 0.9 and (disc([fake], text) < 0).float().mean() > 0.9


def test_the_config_names_the_bad_key():
    with pytest.raises(ValueError, match="steps"):
        load_distill_config("tiny", None, ["method=add", "steps=8"])
    with pytest.raises(ValueError, match="disc_t_min"):
        load_distill_config("tiny", None, ["method=add", "disc_t_min=0.6", "disc_t_max=0.5"])
    with pytest.raises(ConfigError, match="base_fraction is set but add has no such setting"):
        load_distill_config("tiny", None, ["method=add", "base_fraction=0.5"])


def test_fewstep_distill_add_tiny_trains_the_student_and_the_discriminator(teacher, tmp_path, onnx_cache):
    from fewstep_cli.main import main

    out = tmp_path / "run"
    argv = ["distill", "--teacher", str(teacher), "--method", "add", "--steps", "2", "--preset", "tiny"]
    over = ["adv_warmup=2", "disc_channels=8"]
    assert main([*argv, *(a for o in over for a in ("--set", o)), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["finished"] and summary["iters"] == 4 and summary["sampler"] == "ancestral"
    # per update of batch 4: a guided teacher pass (8), real and fake feature passes (8), a student
    # pass and its backward (4 each); the backward through the fake features once the weight is > 0
    assert summary["evals"] == {"teacher_forward": 32, "feature_forward": 32, "student_forward": 16,
                                "backward": 16, "feature_backward": 12}  # fmt: skip
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(np.isfinite(r["loss"]) and np.isfinite(r["d_loss"]) for r in rows)
    assert rows[-1]["adv_weight"] == pytest.approx(0.1) and "g_adv_loss" in rows[-1]
    ckpt = out / "checkpoint"
    assert (ckpt / "discriminator.safetensors").is_file() and (ckpt / "discriminator_optim.safetensors").is_file()
    info = json.loads((out / "student" / "config.json").read_text())["student"]
    assert (info["method"], info["steps"], info["sampler"]) == ("add", 2, "ancestral")
    from distill.export.bundle import ExportOptions, export_bundle

    m = export_bundle(out / "student", tmp_path / "bundle", ExportOptions(cache_dir=onnx_cache))
    assert m.sampler == "ancestral" and sorted(m.steps) == [2] and m.guidance.network_input


def test_an_interrupted_add_run_resumes_exactly_discriminator_included(teacher, tmp_path):
    from safetensors.torch import load_file

    over = ["method=add", "steps=1", "ckpt_every=1", "adv_warmup=1", "disc_channels=8", "r1_weight=0.1"]
    cfg = load_distill_config("tiny", None, over)
    distill(cfg, teacher, tmp_path / "a", RunOptions(progress=False))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False, stop_at=2))
    distill(cfg, teacher, tmp_path / "b", RunOptions(progress=False))
    a = assert_resumed_exactly(tmp_path / "a", tmp_path / "b")
    for f in ("discriminator.safetensors", "discriminator_optim.safetensors"):
        da, db = (load_file(tmp_path / r / "checkpoint" / f) for r in ("a", "b"))
        assert da.keys() == db.keys() and all(torch.equal(da[k], db[k]) for k in da)
    t0 = load_denoiser(teacher)[0].state_dict()
    assert any(not torch.equal(a[k], t0[k]) for k in t0)  # it trained
