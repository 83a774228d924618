"""The samplers: k-step ancestral (posterior) sampling and DDIM, with classifier-free guidance.

One home for sampling maths (`docs/architecture.md`): the same functions run inside distillation
rollouts and evaluation on torch tensors and inside the service on numpy arrays. They are plain
functions over a denoiser callable

    denoise(z, t, cond, w) -> x_hat        z: (B, C, H, W), t: (B,) float32, w: (B,) float32 or None

written with array operators only, with no hidden state and no `no_grad` inside (callers choose
`torch.inference_mode()`). Scalar schedule coefficients come from `fewstep.schedule` in float64
and are applied as Python floats, so numpy and torch see the same numbers.

Noise comes from a `NoiseSource` (see `fewstep.rng.SeededNoise`); numpy noise is moved onto the
array type of z with `as_array_like`, which keeps this module free of torch imports.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

from fewstep.schedule import StepPlan, step_plan

Denoise = Callable[[Any, Any, Any, Any], Any]


class NoiseSource(Protocol):
    def initial(self) -> Any: ...

    def step(self, j: int) -> Any: ...


def as_array_like(value: np.ndarray, like: Any) -> Any:
    """Return numpy `value` as the array type, dtype and device of `like` (numpy or torch)."""
    if isinstance(like, np.ndarray):
        return value.astype(like.dtype, copy=False)
    if hasattr(like, "new_tensor"):  # torch.Tensor, without importing torch here
        return like.new_tensor(value)
    raise TypeError(f"unsupported array type {type(like).__name__}")


def batch_vector(value: float | np.ndarray, like: Any) -> Any:
    """A (B,) float32 vector of `value` (scalar or per-image array) of the array type of `like`."""
    batch = like.shape[0]
    return as_array_like(np.broadcast_to(np.asarray(value, np.float32), (batch,)).copy(), like)


def guidance_combine(x_cond: Any, x_null: Any, w: Any) -> Any:
    """Classifier-free guidance in x-space: x_hat^w = x_hat(z, null) + w (x_hat(z, c) - x_hat(z, null)).

    w = 1 returns the conditional prediction exactly (no rounding through the difference).
    `w` is a float or an array broadcastable to x (per-image guidance: shape (B, 1, 1, 1)).
    """
    if np.ndim(w) == 0 and float(w) == 1.0:
        return x_cond
    return x_null + w * (x_cond - x_null)


def ancestral_step(z_t: Any, x_hat: Any, c_z: Any, c_x: Any, std: Any, eps: Any) -> Any:
    """One draw z_s ~ q(z_s | z_t, x_hat) = N(c_z z_t + c_x x_hat, std^2 I).

    Coefficients may be floats or per-image (B, 1, 1, 1) arrays (step-level batching).
    """
    return c_z * z_t + c_x * x_hat + std * eps


def ddim_step(z_t: Any, x_hat: Any, alpha_t: Any, sigma_t: Any, alpha_s: Any, sigma_s: Any) -> Any:
    """Deterministic DDIM step (Song et al. 2021, eq. 12 with eta = 0): z_s = alpha_s x_hat + sigma_s eps_hat."""
    eps_hat = (z_t - alpha_t * x_hat) / sigma_t
    return alpha_s * x_hat + sigma_s * eps_hat


def ddim_x_for(z_t: Any, z_s: Any, alpha_t: Any, sigma_t: Any, alpha_s: Any, sigma_s: Any) -> Any:
    """The x_hat whose DDIM step from z_t at t lands on z_s at s < t: the inverse of `ddim_step` in x.

    Solving z_s = alpha_s x + (sigma_s / sigma_t)(z_t - alpha_t x) for x gives
        x = (z_s - (sigma_s / sigma_t) z_t) / (alpha_s - (sigma_s / sigma_t) alpha_t),
    the x_tilde target of progressive distillation (Salimans and Ho 2022, Algorithm 2) and the
    invDDIM of multistep consistency models (Heek et al. 2024). The denominator is positive for s < t
    (alpha / sigma grows as t falls).
    """
    ratio = sigma_s / sigma_t
    return (z_s - ratio * z_t) / (alpha_s - ratio * alpha_t)


def _initial_z(noise: NoiseSource, like: Any | None) -> Any:
    z = noise.initial()
    return z if like is None or isinstance(z, type(like)) else as_array_like(z, like)


def _step_noise(noise: NoiseSource, j: int, like: Any) -> Any:
    eps = noise.step(j)
    return eps if isinstance(eps, type(like)) else as_array_like(eps, like)


def _sample(
    denoise: Denoise,
    steps: int | StepPlan,
    cond: Any,
    w: Any,
    noise: NoiseSource,
    like: Any | None,
    update: Callable[[Any, Any, StepPlan, int], Any],
) -> Any:
    """The loop both samplers share: denoise at t_i, then `update` to z at s_i; return the last x_hat."""
    plan = steps if isinstance(steps, StepPlan) else step_plan(steps)
    z = _initial_z(noise, like)
    x_hat = z
    for i in range(plan.steps):
        x_hat = denoise(z, batch_vector(plan.t[i], z), cond, w)
        if i < plan.steps - 1:
            z = update(z, x_hat, plan, i)
    return x_hat


def ancestral_sample(
    denoise: Denoise,
    steps: int | StepPlan,
    cond: Any,
    w: Any,
    noise: NoiseSource,
    like: Any | None = None,
) -> Any:
    """k-step ancestral sampling (`docs/moment-matching.md`, "The k-step student sampler").

    z_1 ~ N(0, I) (sigma_1 = 1 to within 2e-7); at each step x_tilde = denoise(z_t, t, c, w) and
    z_s ~ q(z_s | z_t, x_tilde); the last step returns x_tilde. `like` fixes the array type of
    the noise (pass a torch tensor on the right device for the torch path).
    """

    def update(z: Any, x_hat: Any, plan: StepPlan, i: int) -> Any:
        eps = _step_noise(noise, i, z)
        return ancestral_step(z, x_hat, float(plan.c_z[i]), float(plan.c_x[i]), float(plan.std[i]), eps)

    return _sample(denoise, steps, cond, w, noise, like, update)


def ddim_sample(
    denoise: Denoise,
    steps: int | StepPlan,
    cond: Any,
    w: Any,
    noise: NoiseSource,
    like: Any | None = None,
) -> Any:
    """k-step deterministic DDIM from z_1 ~ N(0, I); returns the last x_hat."""

    def update(z: Any, x_hat: Any, plan: StepPlan, i: int) -> Any:
        coeffs = (plan.alpha_t[i], plan.sigma_t[i], plan.alpha_s[i], plan.sigma_s[i])
        return ddim_step(z, x_hat, *(float(c) for c in coeffs))

    return _sample(denoise, steps, cond, w, noise, like, update)


SAMPLERS: dict[str, Callable[..., Any]] = {"ancestral": ancestral_sample, "ddim": ddim_sample}
