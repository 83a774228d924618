"""The forward process, the posterior draw and the teacher's training loss: written once, called by
teacher training, the Adam-moment estimate and every distillation method.

Notation (`docs/moment-matching.md`): data x, noise eps, z_t = alpha_t x + sigma_t eps on the
variance-preserving schedule of `fewstep.schedule` (alpha_t^2 + sigma_t^2 = 1). Per-example
coefficients are (B, 1, 1, 1) tensors (`per_example`), so every example may sit at its own time.

Before this module the same lines were typed out in five places (teacher training, the Adam-moment
estimate, moment matching, progressive and consistency distillation), and the posterior draw
re-derived the sampler's ancestral update; a change to one copy would have silently split
training from sampling. The ancestral update itself stays `fewstep.sampler.ancestral_step`, the
one the samplers and every serving backend run.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any

import numpy as np
import torch

from fewstep.networks import alpha_sigma_torch
from fewstep.sampler import ancestral_step
from fewstep.schedule import posterior, v_from_x_eps


def per_example(values: np.ndarray | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-example coefficients (B,) as a (B, 1, 1, ...) tensor of `like`'s dtype and device, to
    broadcast over each example's pixels. numpy values are taken as float64 (the schedule's
    precision) and rounded to `like`'s dtype once."""
    shape = (-1, *([1] * (like.ndim - 1)))
    if isinstance(values, torch.Tensor):
        return values.to(like.dtype).view(shape)
    return torch.as_tensor(np.asarray(values, np.float64), device=like.device).to(like.dtype).view(shape)


def times(values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """Per-example times (B,) as the network's t input: float32 first, as `fewstep.sampler.batch_vector`
    gives the samplers and the service, then `like`'s dtype, so a student is trained on the very
    t values it is sampled at."""
    return torch.as_tensor(np.asarray(values, np.float32), device=like.device).to(like.dtype)


def forward_process(x: torch.Tensor, alpha: torch.Tensor, sigma: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """z = alpha x + sigma eps (alpha, sigma broadcastable over x: `per_example`)."""
    return alpha * x + sigma * eps


def schedule_at(t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t and sigma_t of per-example times t (B,), as (B, 1, 1, ...) tensors of `like`'s dtype."""
    alpha, sigma = alpha_sigma_torch(t.float())
    return per_example(alpha, like), per_example(sigma, like)


def diffuse(x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion to continuous per-example times: z_t = alpha_t x + sigma_t eps."""
    alpha, sigma = schedule_at(t, x)
    return forward_process(x, alpha, sigma, eps)


def posterior_draw(
    z_t: torch.Tensor, x_tilde: torch.Tensor, t: torch.Tensor, s: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """z_s ~ q(z_s | z_t, x_tilde) for per-example s < t: the sampler's ancestral update
    (`fewstep.sampler.ancestral_step`) with coefficients from `fewstep.schedule.posterior` (float64).

    x_tilde is detached: a student's gradient never flows through z_s (the stop-gradient of moment
    matching, Salimans et al. 2024, Algorithm 1)."""
    post = posterior(t.detach().cpu().double().numpy(), s.detach().cpu().double().numpy())
    return ancestral_step(
        z_t, x_tilde.detach(), per_example(post.c_z, z_t), per_example(post.c_x, z_t), per_example(post.std, z_t), eps
    )


def denoising_loss(
    net: torch.nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    eps: torch.Tensor,
    states: torch.Tensor,
    mask: torch.Tensor,
    prediction: str,
    autocast: AbstractContextManager[Any] | None = None,
) -> torch.Tensor:
    """The teacher's training loss: MSE between the network's output at z_t and its own target
    (v = alpha_t eps - sigma_t x for a v-prediction network, else x or eps), t ~ U(0, 1) drawn by
    the caller. `autocast` wraps the forward pass (bf16 on CUDA); the loss is computed in fp32.
    Teacher training and the Adam-moment estimate (which must see exactly this loss) both call it."""
    alpha, sigma = (a[:, None, None, None] for a in alpha_sigma_torch(t))
    z = forward_process(x, alpha, sigma, eps)
    target = {"v": v_from_x_eps(x, eps, alpha, sigma), "x": x, "eps": eps}[prediction]
    with autocast or nullcontext():
        pred = net(z, t, states, mask)
    return torch.nn.functional.mse_loss(pred.float(), target)
