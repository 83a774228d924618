"""The one home of the forward process, the posterior draw and the teacher's loss
(distill.kit.diffusion): fixed values against the schedule, and the identities the methods rely on."""

import numpy as np
import pytest
import torch

from distill.kit.diffusion import (
    denoising_loss,
    diffuse,
    forward_process,
    per_example,
    posterior_draw,
    schedule_at,
    times,
)
from fewstep.sampler import ancestral_step, batch_vector
from fewstep.schedule import alpha_sigma, posterior, v_from_x_eps


def test_per_example_broadcasts_over_each_examples_pixels_in_the_like_dtype():
    like = torch.zeros(3, 2, 4, 4)
    v = per_example(np.array([0.1, 0.2, 0.3]), like)
    assert v.shape == (3, 1, 1, 1) and v.dtype == torch.float32
    assert torch.equal(v.flatten(), torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64).float())
    assert per_example(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64), like).dtype == torch.float32


def test_times_are_the_float32_values_the_samplers_feed_the_network():
    t = np.array([1.0, 0.875, 1 / 3])
    z = torch.zeros(3, 1, 2, 2)
    assert torch.equal(times(t, z), torch.as_tensor(batch_vector(t.astype(np.float32), np.zeros((3,), np.float32))))


def test_diffuse_is_alpha_x_plus_sigma_eps_at_the_schedules_values():
    x, eps = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    a, s = alpha_sigma(t.numpy().astype(np.float64))
    expected = (
        torch.as_tensor(a, dtype=torch.float32).view(-1, 1, 1, 1) * x
        + torch.as_tensor(s, dtype=torch.float32).view(-1, 1, 1, 1) * eps
    )
    torch.testing.assert_close(diffuse(x, t, eps), expected, rtol=1e-5, atol=1e-6)
    alpha, sigma = schedule_at(t, x)
    assert torch.equal(diffuse(x, t, eps), forward_process(x, alpha, sigma, eps))


def test_posterior_draw_is_the_samplers_ancestral_step():
    z, x_tilde, eps = torch.randn(3, 1, 4, 4), torch.randn(3, 1, 4, 4, requires_grad=True), torch.randn(3, 1, 4, 4)
    t, s = torch.tensor([0.9, 0.5, 0.2], dtype=torch.float64), torch.tensor([0.8, 0.1, 0.0], dtype=torch.float64)
    post = posterior(t.numpy(), s.numpy())
    col = [torch.as_tensor(c).float().view(-1, 1, 1, 1) for c in (post.c_z, post.c_x, post.std)]
    out = posterior_draw(z, x_tilde, t, s, eps)
    assert torch.equal(out, ancestral_step(z, x_tilde.detach(), *col, eps))
    assert not out.requires_grad  # the stop-gradient of moment matching


@pytest.mark.parametrize("prediction", ["v", "x", "eps"])
def test_denoising_loss_is_the_mse_to_the_networks_own_target(prediction):
    x, eps = torch.randn(5, 1, 4, 4), torch.randn(5, 1, 4, 4)
    t = torch.rand(5)
    seen = {}

    def net(z, t_in, states, mask):
        seen["z"] = z
        return torch.zeros_like(z)

    loss = denoising_loss(net, x, t, eps, torch.zeros(5, 2, 3), torch.ones(5, 2, dtype=torch.bool), prediction)
    alpha, sigma = schedule_at(t, x)
    target = {"v": v_from_x_eps(x, eps, alpha, sigma), "x": x, "eps": eps}[prediction]
    torch.testing.assert_close(loss, target.pow(2).mean())
    torch.testing.assert_close(seen["z"], alpha * x + sigma * eps)
