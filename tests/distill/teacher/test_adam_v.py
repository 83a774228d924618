"""Re-estimating Adam's second moments at fixed weights (mm-param's preconditioner): the EMA maths
against torch's Adam, closeness to the v of a real training run on a small model, and the packed
teacher's file it writes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from distill.teacher.adam_v import accumulate_second_moments, estimate_adam_v, second_moment_stats
from tests.conftest import make_packed_model


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _batch(gen: torch.Generator, n: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 4, generator=gen)
    y = torch.sin(x @ torch.tensor([1.0, -2.0, 0.5, 0.0])).unsqueeze(1) + 0.1 * torch.randn(n, 1, generator=gen)
    return x, y


def test_the_estimate_is_adams_bias_corrected_v_at_fixed_weights():
    """With lr = 0 Adam's weights stay put: its exp_avg_sq / (1 - beta2^N) is exactly the estimate."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.0, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(1)
    batches = [_batch(gen) for _ in range(30)]
    for x, y in batches:
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    params = dict(model.named_parameters())
    v = accumulate_second_moments(lambda i: torch.nn.functional.mse_loss(model(batches[i][0]), batches[i][1]),
                                  params, 30, 0.99)  # fmt: skip
    for name, p in params.items():
        torch.testing.assert_close(v[name], opt.state[p]["exp_avg_sq"] / (1 - 0.99**30), rtol=1e-5, atol=1e-12)


def test_the_estimate_is_close_to_the_v_of_a_real_training_run():
    """Train a small model with Adam, then estimate v at its final weights on fresh minibatches:
    entry by entry within a factor of a few of Adam's own v, and the same order (log correlation)."""
    model = _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3, betas=(0.9, 0.99))
    gen = torch.Generator().manual_seed(2)
    for _ in range(1500):
        x, y = _batch(gen)
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    params = dict(model.named_parameters())

    def loss_fn(i: int) -> torch.Tensor:
        x, y = _batch(gen)
        return torch.nn.functional.mse_loss(model(x), y)

    v = accumulate_second_moments(loss_fn, params, 200, 0.99, grad_clip=1.0)
    true = torch.cat([opt.state[p]["exp_avg_sq"].flatten() for p in params.values()]).double()
    est = torch.cat([v[n].flatten() for n in params]).double()
    ratio = (est / true).numpy()
    assert 0.5 < np.median(ratio) < 2.0, np.median(ratio)
    assert np.mean((ratio > 0.2) & (ratio < 5)) > 0.9
    assert np.corrcoef(np.log(est.numpy()), np.log(true.numpy()))[0, 1] > 0.9
    assert second_moment_stats(v)["zero_share"] == 0.0


def test_bad_arguments_are_refused():
    params = dict(_mlp().named_parameters())
    with pytest.raises(ValueError, match="minibatch"):
        accumulate_second_moments(lambda i: torch.zeros(()), params, 0, 0.99)
    with pytest.raises(ValueError, match="beta2"):
        accumulate_second_moments(lambda i: torch.zeros(()), params, 1, 1.0)


def test_a_packed_teacher_gets_fp32_moments_for_every_parameter(tmp_path, tiny_bert_dir):
    from distill.kit.checkpoint import load_denoiser

    teacher = make_packed_model(tmp_path / "t", tiny_bert_dir)
    weights_before = load_file(teacher / "model.safetensors")
    v = estimate_adam_v(teacher, n=3, progress=False)
    stored = load_file(teacher / "adam_v.safetensors")
    names = {n for n, _ in load_denoiser(teacher)[0].named_parameters()}
    assert set(stored) == names == set(v)
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() and (t >= 0).all() for t in stored.values())
    assert second_moment_stats(stored)["median"] > 0
    after = load_file(teacher / "model.safetensors")
    assert all(torch.equal(weights_before[k], after[k]) for k in after)  # the weights are untouched
