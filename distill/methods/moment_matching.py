"""Moment-matching distillation maths (Salimans et al. 2024; `moment-matching.md`), as pure functions.

Everything here works on callables and tensors, not on training loops, so that the toy tests
(analytic Gaussian-mixture teachers) and the shapes-world runner (`distill.methods.moment_matching_run`) share it.

Notation follows the paper: data x, z_t = alpha_t x + sigma_t eps, student x_tilde = g_eta(z_t, t, c, w),
z_s ~ q(z_s | z_t, stopgrad(x_tilde)) for s < t, frozen (guided) teacher x_hat_theta, auxiliary
denoiser x_hat_phi.

Weighting w(s) (the design note leaves it open). Both student losses are linear surrogates
x_tilde . stopgrad(d) whose gradient is w(s) d; the size of d varies by orders of magnitude with s (near
s = 0 every denoiser agrees, near s = 1 they differ most: at initialisation, K = 8, s >= 0.7 carried
89% of the gradient energy under "batch"). The options (`surrogate`, `DistillConfig.weighting`):
- "batch" (default): d divided by its RMS over the whole minibatch: one scalar per update, so the loss
  scale (and the learning rate that suits it) stays the same through training, while examples keep
  their relative sizes, i.e. w(s) = 1 within a minibatch.
- "rms": each example's d divided by its own RMS (unit direction whatever s; it amplifies the low-s
  examples, whose d is mostly the auxiliary's fitting error): worse FD on the v1 teacher
  (`results/mm_ablation_v1.md`), and on the binding teacher the same FD with more grain (+0.38
  levels, `results/mm_ablation.md`).
- "none": d as it is.
- "sbin": d divided by the square root of a running (EMA, bias-corrected) mean square of d in its
  s-bin (`SBinNormaliser`): every noise level gets a unit-size direction on average, while examples
  within a level keep their relative sizes.
- "snr-cap": w(s) = min(1 + SNR(s), cap) (the x-space weight of a v-loss, capped), then one minibatch
  scalar as "batch".
The auxiliary regression uses either the plain x-space MSE (`aux_weighting = "none"`) or the teacher's
own loss weighting (`"teacher"`: the teacher is v-trained, and |v - v_hat|^2 = |x - x_hat|^2 / sigma^2
= (1 + SNR) |x - x_hat|^2, capped at `teacher_weight_cap` so that it stays bounded as s -> 0).
mm-param's teacher gradient G is always the gradient of that capped teacher loss.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from fewstep.schedule import logsnr

MIN_GAP = 1e-4  # smallest t - s: the posterior needs s < t
WEIGHTINGS = ("rms", "batch", "none", "sbin", "snr-cap")


def sample_times(
    batch: int, k: int, gen: torch.Generator, device: torch.device | str = "cpu", mode: str = "uniform"
) -> tuple[torch.Tensor, torch.Tensor]:
    """The k-step student's training times (float64), with s < t.

    "uniform": s ~ U(0, 1), t = min(1, s + U(0, 1/k)): t anywhere in (0, 1].
    "grid": t ~ U{1/k, 2/k, ..., 1} (the times the k-step sampler evaluates the student at),
    s ~ U[t - 1/k, t): the student trains only where it is used, and z_s covers its step."""
    if mode == "uniform":
        s = torch.rand(batch, generator=gen, device=device, dtype=torch.float64)
        gap = torch.rand(batch, generator=gen, device=device, dtype=torch.float64) / k
        t = torch.clamp(s + gap.clamp(min=MIN_GAP), max=1.0)
    elif mode == "grid":
        i = torch.randint(1, k + 1, (batch,), generator=gen, device=device)
        t = i.double() / k
        s = t - (1.0 - torch.rand(batch, generator=gen, device=device, dtype=torch.float64)) / k
    else:
        raise ValueError(f"time_sampling: unknown {mode!r} (uniform or grid)")
    s = torch.minimum(s, t - MIN_GAP).clamp(min=0.0)
    return s, t


def snr(s: torch.Tensor) -> torch.Tensor:
    """SNR(s) = alpha_s^2 / sigma_s^2 of the schedule (float64)."""
    return torch.as_tensor(np.exp(logsnr(s.detach().cpu().double().numpy())), device=s.device)


def teacher_weight(s: torch.Tensor, cap: float) -> torch.Tensor:
    """min(1 + SNR(s), cap) (float64, per example): the x-space weight of the teacher's v-MSE
    (|v - v_hat|^2 = |x - x_hat|^2 / sigma_s^2 and 1 / sigma^2 = 1 + SNR), capped so that it stays
    bounded near s = 0 (uncapped it reaches 1 + e^15 at s = 0)."""
    if cap < 1:
        raise ValueError(f"the weight cap must be >= 1, got {cap}")
    return (1.0 + snr(s)).clamp(max=cap)


def s_bin(s: torch.Tensor, bins: int) -> torch.Tensor:
    """Index of s's bin among `bins` equal bins of [0, 1] (long, per example)."""
    return (s.detach().double() * bins).floor().long().clamp(0, bins - 1)


class SBinNormaliser:
    """Per-noise-level running mean square of the student's stop-gradient direction (`weighting="sbin"`).

    Bin b keeps m_b <- decay m_b + (1 - decay) mean_{i in b} |d_i|^2 (mean per element), updated only
    by minibatches that hold examples of that bin, and bias-corrected (m_b / (1 - decay^n_b), like
    Adam), so the first minibatch already normalises to unit size. Direction d_i is divided by
    sqrt of its bin's value after the update. Its state is plain floats so that a checkpoint's JSON
    restores it exactly."""

    def __init__(self, bins: int, decay: float) -> None:
        if bins < 1 or not 0 <= decay < 1:
            raise ValueError(f"SBinNormaliser: need bins >= 1 and 0 <= decay < 1, got {bins}, {decay}")
        self.bins, self.decay = bins, decay
        self.mean_sq = [0.0] * bins
        self.weight = [0.0] * bins  # 1 - decay^n_b: the bias correction

    def __call__(self, direction: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        """Update with this minibatch's directions and return the per-example scale 1 / sqrt(m_b)."""
        ms = direction.detach().flatten(1).double().pow(2).mean(1).cpu()
        idx = s_bin(s, self.bins).cpu()
        for b in idx.unique().tolist():
            batch_ms = float(ms[idx == b].mean())
            self.mean_sq[b] = self.decay * self.mean_sq[b] + (1 - self.decay) * batch_ms
            self.weight[b] = self.decay * self.weight[b] + (1 - self.decay)
        value = torch.tensor([m / w if w > 0 else 1.0 for m, w in zip(self.mean_sq, self.weight, strict=True)])
        return (1.0 / (value[idx].sqrt() + 1e-12)).to(direction.device, direction.dtype)

    def values(self) -> list[float]:
        """The bias-corrected mean square per bin (nan for a bin not seen yet)."""
        return [m / w if w > 0 else float("nan") for m, w in zip(self.mean_sq, self.weight, strict=True)]

    def state(self) -> dict[str, list[float]]:
        return {"mean_sq": list(self.mean_sq), "weight": list(self.weight)}

    def load_state(self, state: dict[str, list[float]]) -> None:
        if len(state["mean_sq"]) != self.bins or len(state["weight"]) != self.bins:
            raise ValueError(f"SBinNormaliser: saved state has {len(state['mean_sq'])} bins, not {self.bins}")
        self.mean_sq, self.weight = [float(v) for v in state["mean_sq"]], [float(v) for v in state["weight"]]


def per_bin(values: torch.Tensor, s: torch.Tensor, bins: int) -> tuple[list[float], list[float]]:
    """(sum, count) of per-example `values` by s-bin, as lists (for the per-bin signal in metrics)."""
    idx = s_bin(s, bins).cpu()
    v = values.detach().double().cpu()
    sums = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, v)
    counts = torch.zeros(bins, dtype=torch.float64).index_add_(0, idx, torch.ones_like(v))
    return sums.tolist(), counts.tolist()


def normalise(d: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Each example's direction divided by its RMS: the w(s) weighting of this module's docstring."""
    rms = d.flatten(1).pow(2).mean(1).sqrt().view(-1, *([1] * (d.ndim - 1)))
    return d / (rms + eps)


def weighted_direction(
    direction: torch.Tensor,
    weighting: str = "batch",
    s: torch.Tensor | None = None,
    snr_cap: float = 10.0,
    normaliser: SBinNormaliser | None = None,
) -> torch.Tensor:
    """w(s) d, the gradient the student's surrogate passes to x_tilde (see the module docstring).

    "rms" divides each example's d by its own RMS, "batch" divides every d by the RMS over the whole
    minibatch, "none" leaves d as it is, "sbin" divides d by sqrt of its s-bin's running mean square
    (`normaliser`, updated here), "snr-cap" multiplies d by min(1 + SNR(s), snr_cap) and then divides
    by the minibatch RMS. "sbin" and "snr-cap" need the per-example s."""
    d = direction.detach()
    shape = (-1, *([1] * (d.ndim - 1)))
    if weighting == "rms":
        return normalise(d)
    if weighting == "batch":
        return d / (d.pow(2).mean().sqrt() + 1e-8)
    if weighting == "none":
        return d
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting: unknown {weighting!r} ({', '.join(WEIGHTINGS)})")
    if s is None:
        raise ValueError(f"weighting={weighting!r} needs the per-example s")
    if weighting == "sbin":
        if normaliser is None:
            raise ValueError("weighting='sbin' needs an SBinNormaliser")
        return d * normaliser(d, s).view(shape)
    d = d * teacher_weight(s, snr_cap).to(d.device, d.dtype).view(shape)
    return d / (d.pow(2).mean().sqrt() + 1e-8)


def surrogate(
    x_tilde: torch.Tensor,
    direction: torch.Tensor,
    weighting: str = "batch",
    s: torch.Tensor | None = None,
    snr_cap: float = 10.0,
    normaliser: SBinNormaliser | None = None,
) -> torch.Tensor:
    """The student's linear surrogate mean_i x_tilde_i . stopgrad(w(s_i) d_i): its gradient in x_tilde
    is w(s) d (`weighted_direction`, divided by the number of elements)."""
    d = weighted_direction(direction, weighting, s, snr_cap, normaliser)
    return (x_tilde * d).flatten(1).sum(1).mean() / x_tilde[0].numel()


def aux_loss(
    aux_pred: torch.Tensor,
    x_tilde: torch.Tensor,
    teacher_pred: torch.Tensor | None,
    weight: torch.Tensor | None = None,
    anchor: float = 1.0,
) -> torch.Tensor:
    """L(phi) = w(s) (|sg(x_tilde) - x_hat_phi(z_s)|^2 + a |x_hat_theta(z_s) - x_hat_phi(z_s)|^2), the
    squares a mean per element, then the mean over examples; w(s) = `weight` (B,) or 1, a = `anchor`.

    The first term fits the student's conditional mean E[x_tilde | z_s]; the teacher term anchors the
    auxiliary where the student's samples say little (and makes it equal the teacher at the optimum
    when the student matches). `teacher_weight(s, cap)` as `weight` gives the teacher's own loss.
    With `anchor` = 0 (no `teacher_pred` needed) it is the plain denoising loss on the student's
    samples: DMD's "fake score" (`distill.methods.emd`)."""
    per = (aux_pred - x_tilde.detach()).pow(2).flatten(1).mean(1)
    if anchor:
        if teacher_pred is None:
            raise ValueError("aux_loss: anchor > 0 needs the teacher's prediction")
        per = per + anchor * (aux_pred - teacher_pred.detach()).pow(2).flatten(1).mean(1)
    if weight is None:
        return per.mean()
    return (weight.to(per.device, per.dtype) * per).mean()


def teacher_loss(pred: torch.Tensor, x_tilde: torch.Tensor, s: torch.Tensor, cap: float) -> torch.Tensor:
    """The teacher's training loss on student samples in x-space: mean_i min(1 + SNR(s_i), cap)
    mean |x_hat_theta(z_s,i) - x_tilde_i|^2 (v-MSE, capped); mm-param's G is its gradient."""
    w = teacher_weight(s, cap).to(pred.device, pred.dtype)
    return (w * (pred - x_tilde.detach()).pow(2).flatten(1).mean(1)).mean()


def mm_alt_student_loss(
    x_tilde: torch.Tensor, aux_pred: torch.Tensor, teacher_pred: torch.Tensor, weighting: str = "batch", **kw: Any
) -> torch.Tensor:
    """L(eta) = w(s) x_tilde . sg(x_hat_phi(z_s) - x_hat_theta(z_s)): moves E[x_tilde | z_s] toward
    the teacher ("fake minus real" of score distillation, generalised to k steps). `kw`: s, snr_cap,
    normaliser, as `surrogate`."""
    return surrogate(x_tilde, aux_pred - teacher_pred, weighting, **kw)


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


def mm_param_student_loss(
    x_tilde: torch.Tensor, jvp_out: torch.Tensor, weighting: str = "batch", **kw: Any
) -> torch.Tensor:
    """L(eta) = w(s) x_tilde_B . sg(J_theta(z_s,B) nu): the alternating loss with an auxiliary that
    took one preconditioned step nu from the teacher (x_hat_phi - x_hat_theta ~ J nu). `kw` as
    `surrogate`."""
    return surrogate(x_tilde, jvp_out, weighting, **kw)
