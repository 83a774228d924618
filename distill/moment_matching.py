"""Moment-matching distillation maths (Salimans et al. 2024; `moment-matching.md`), as pure functions.

Everything here works on callables and tensors, not on training loops, so that the toy tests
(analytic Gaussian-mixture teachers) and the shapes-world runner (`distill/distiller.py`) share it.

Notation follows the paper: data x, z_t = alpha_t x + sigma_t eps, student x_tilde = g_eta(z_t, t, c, w),
z_s ~ q(z_s | z_t, stopgrad(x_tilde)) for s < t, frozen (guided) teacher x_hat_theta, auxiliary
denoiser x_hat_phi.

Weighting w(s) (the design note leaves it open). Both student losses are linear surrogates
x_tilde . stopgrad(d) whose gradient is d; the size of d varies by orders of magnitude with s (near
s = 0 every denoiser agrees, near s = 1 they differ most). The default, "batch", divides d by its RMS
over the whole minibatch: one scalar per update, so the loss scale (and the learning rate that suits
it) stays the same through training, while examples keep their relative sizes, i.e. w(s) = 1 within a
minibatch. "rms" divides each example's d by its own RMS, so every example contributes a unit-size
direction whatever its s; it amplifies the low-s examples, whose d is mostly the auxiliary's fitting
error, and measured worse (`results/mm_ablation.md`: FD 599 against 557 for "batch" after the same
5 minutes at K = 8). "none" leaves d as it is. The auxiliary regression uses the plain mean squared
error (w(s) = 1), as denoiser training does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from fewstep.networks import alpha_sigma_torch
from fewstep.schedule import posterior

MIN_GAP = 1e-4  # smallest t - s: the posterior needs s < t


def sample_times(batch: int, k: int, gen: torch.Generator, device: torch.device | str = "cpu"):
    """s ~ U(0, 1), t = min(1, s + U(0, 1/k)) (the k-step student's training times), with s < t."""
    s = torch.rand(batch, generator=gen, device=device, dtype=torch.float64)
    gap = torch.rand(batch, generator=gen, device=device, dtype=torch.float64) / k
    t = torch.clamp(s + gap.clamp(min=MIN_GAP), max=1.0)
    s = torch.minimum(s, t - MIN_GAP).clamp(min=0.0)
    return s, t


def diffuse(x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """Forward diffusion z_t = alpha_t x + sigma_t eps."""
    alpha, sigma = (a.to(x.dtype).view(-1, *([1] * (x.ndim - 1))) for a in alpha_sigma_torch(t.float()))
    return alpha * x + sigma * eps


def posterior_draw(
    z_t: torch.Tensor, x_tilde: torch.Tensor, t: torch.Tensor, s: torch.Tensor, eps: torch.Tensor
) -> torch.Tensor:
    """z_s ~ q(z_s | z_t, x_tilde), coefficients per example from `fewstep.schedule.posterior` (float64).

    x_tilde is detached: the student's gradient never flows through z_s (the stop-gradient of the
    algorithm)."""
    post = posterior(t.detach().cpu().double().numpy(), s.detach().cpu().double().numpy())
    shape = (-1, *([1] * (z_t.ndim - 1)))

    def col(a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(a, dtype=torch.float64, device=z_t.device).to(z_t.dtype).view(shape)

    return col(post.c_z) * z_t + col(post.c_x) * x_tilde.detach() + col(post.std) * eps


def normalise(d: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each example's direction divided by its RMS: the w(s) weighting of this module's docstring."""
    rms = d.flatten(1).pow(2).mean(1).sqrt().view(-1, *([1] * (d.ndim - 1)))
    return d / (rms + eps)


def surrogate(x_tilde: torch.Tensor, direction: torch.Tensor, weighting: str = "batch") -> torch.Tensor:
    """The student's linear surrogate mean_i x_tilde_i . stopgrad(d_i): its gradient in x_tilde is d.

    weighting: "rms" divides each example's d by its own RMS, "batch" divides every d by the RMS over
    the whole minibatch (one scalar: the loss scale is uniform across training, the relative size of
    d across s is kept), "none" leaves d as it is."""
    d = direction.detach()
    if weighting == "rms":
        d = normalise(d)
    elif weighting == "batch":
        d = d / (d.pow(2).mean().sqrt() + 1e-8)
    elif weighting != "none":
        raise ValueError(f"weighting: unknown {weighting!r} (rms, batch or none)")
    return (x_tilde * d).flatten(1).sum(1).mean() / x_tilde[0].numel()


def aux_loss(aux_pred: torch.Tensor, x_tilde: torch.Tensor, teacher_pred: torch.Tensor) -> torch.Tensor:
    """L(phi) = |sg(x_tilde) - x_hat_phi(z_s)|^2 + |x_hat_theta(z_s) - x_hat_phi(z_s)|^2 (mean per element).

    The first term fits the student's conditional mean E[x_tilde | z_s]; the teacher term anchors the
    auxiliary where the student's samples say little (and makes it equal the teacher at the optimum
    when the student matches)."""
    return (aux_pred - x_tilde.detach()).pow(2).mean() + (aux_pred - teacher_pred.detach()).pow(2).mean()


def mm_alt_student_loss(
    x_tilde: torch.Tensor, aux_pred: torch.Tensor, teacher_pred: torch.Tensor, weighting: str = "batch"
) -> torch.Tensor:
    """L(eta) = w(s) x_tilde . sg(x_hat_phi(z_s) - x_hat_theta(z_s)): moves E[x_tilde | z_s] toward
    the teacher ("fake minus real" of score distillation, generalised to k steps)."""
    return surrogate(x_tilde, aux_pred - teacher_pred, weighting)


# --- parameter-space variant -----------------------------------------------------------------


def preconditioned_direction(
    loss: torch.Tensor, params: dict[str, torch.Tensor], adam_v: dict[str, torch.Tensor], eps: float = 1e-8
) -> dict[str, torch.Tensor]:
    """nu = -P G with G = d loss / d theta (one backward pass) and P = 1 / (sqrt(v) + eps) from the
    teacher's Adam second moments: the step an Adam-trained auxiliary would take from the teacher."""
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], allow_unused=True)
    out = {}
    for n, g in zip(names, grads, strict=True):
        g = torch.zeros_like(params[n]) if g is None else g
        out[n] = -g / (adam_v[n].to(g).sqrt() + eps)
    return out


def teacher_jvp(
    fn: Callable[[dict[str, torch.Tensor]], torch.Tensor],
    params: dict[str, torch.Tensor],
    direction: dict[str, torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(f(theta), J_theta f . nu) by forward-mode AD (one jvp, no parameter copies)."""
    primals = {k: v.detach() for k, v in params.items()}
    tangents = {k: direction[k].detach().to(v) for k, v in primals.items()}
    # The fused attention kernels have no forward-mode derivative; the math kernel (matmul and
    # softmax) does, and computes the same attention.
    with sdpa_kernel([SDPBackend.MATH]):
        out, tangent = jvp(fn, (primals,), (tangents,))
    return out, tangent


def functional(module: torch.nn.Module, *args: Any) -> Callable[[dict[str, torch.Tensor]], torch.Tensor]:
    """theta -> module(*args) with parameters theta (buffers kept), for `teacher_jvp`."""
    buffers = dict(module.named_buffers())

    def fn(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(module, {**p, **buffers}, args)

    return fn


def mm_param_student_loss(x_tilde: torch.Tensor, jvp_out: torch.Tensor, weighting: str = "batch") -> torch.Tensor:
    """L(eta) = w(s) x_tilde_B . sg(J_theta(z_s,B) nu): the alternating loss with an auxiliary that
    took one preconditioned step nu from the teacher (x_hat_phi - x_hat_theta ~ J nu)."""
    return surrogate(x_tilde, jvp_out, weighting)
