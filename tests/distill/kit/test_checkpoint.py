"""Checkpoints and packing: Adam's second moments survive packing (fp32), and the committed
teacher's moments are usable as mm-param's preconditioner."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from distill.kit.checkpoint import TrainState, load_adam_second_moments, pack_model, save_checkpoint
from distill.kit.config import load_config
from distill.teacher.adam_v import second_moment_stats
from fewstep.networks import build_denoiser

REPO = Path(__file__).resolve().parents[3]


def test_pack_keeps_small_second_moments_in_fp32(tmp_path):
    """A small teacher's v sits around 1e-8..1e-12, below fp16's smallest subnormal (6e-8): packing
    must keep it exactly, not flush it to 0."""
    cfg = load_config("tiny")
    model = build_denoiser(cfg.model)
    ema = build_denoiser(cfg.model)
    opt = torch.optim.Adam(model.parameters())
    for p in model.parameters():
        opt.state[p] = {
            "step": torch.tensor(5.0),
            "exp_avg": torch.zeros_like(p),
            "exp_avg_sq": torch.full_like(p, 3e-11),
        }
    save_checkpoint(tmp_path / "run" / "checkpoint", cfg, TrainState(5, 5, {}), model, ema, opt, torch.Generator())
    out = pack_model(tmp_path / "run", tmp_path / "packed")
    stored = load_file(out / "adam_v.safetensors")
    assert all(v.dtype == torch.float32 for v in stored.values())
    v = load_adam_second_moments(out)
    assert set(v) == {n for n, _ in model.named_parameters()}
    assert all(torch.equal(t, torch.full_like(t, 3e-11)) for t in v.values())


def test_the_committed_teachers_adam_moments_are_a_preconditioner():
    """models/teacher/adam_v.safetensors: fp32 or bf16, under 1% exact zeros, under 1% subnormal.
    (Fails while the teacher is packed with fp16 moments, 97% zeros: repack it with
    `fewstep pack --run models/teacher --out models/teacher --estimate-adam-v 200`.)"""
    path = REPO / "models" / "teacher" / "adam_v.safetensors"
    if not path.is_file():
        pytest.skip("no committed teacher")
    v = load_file(path)
    dtypes = {t.dtype for t in v.values()}
    assert dtypes <= {torch.float32, torch.bfloat16}, f"Adam v stored as {dtypes}: fp16 underflows"
    stats = second_moment_stats(v)
    assert stats["zero_share"] < 0.01, stats
    assert stats["subnormal_share"] < 0.01, stats
    params = load_file(REPO / "models" / "teacher" / "model.safetensors")
    assert set(v) <= set(params) and all(v[k].shape == params[k].shape for k in v)
