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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from fewstep.guidance import guidance_combine  # re-exported: callers built on the sampler combine with it
from fewstep.schedule import StepPlan, step_plan

Denoise = Callable[[Any, Any, Any, Any], Any]

__all__ = [
    "SAMPLERS",
    "Denoise",
    "NoiseSource",
    "StepCoefficients",
    "ancestral_sample",
    "ancestral_step",
    "as_array_like",
    "batch_vector",
    "ddim_sample",
    "ddim_step",
    "ddim_x_for",
    "guidance_combine",
    "step_update",
    "uses_noise",
]


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


@dataclass(frozen=True)
class StepCoefficients:
    """Step i's schedule coefficients, as the one per-step update (`step_update`) reads them.

    Either Python floats (the whole batch at one step: the sampler loop, the GPU bench) or
    per-image float32 arrays of shape (B, 1, 1, 1) (step-level batching, each image at its own
    step). Both round the float64 plan to float32 once, so an image gets the same bytes either way.
    """

    alpha_t: Any
    sigma_t: Any
    alpha_s: Any
    sigma_s: Any
    c_z: Any
    c_x: Any
    std: Any

    @classmethod
    def at(cls, plan: StepPlan, i: int) -> StepCoefficients:
        """Step `i` of `plan` as Python floats."""
        return cls(*(float(getattr(plan, name)[i]) for name in _COEFFICIENTS))

    @classmethod
    def per_image(cls, plans: Sequence[StepPlan], steps: Sequence[int]) -> StepCoefficients:
        """Image b at step `steps[b]` of `plans[b]`, as float32 (B, 1, 1, 1) numpy arrays."""

        def column(name: str) -> np.ndarray:
            values = [getattr(plan, name)[i] for plan, i in zip(plans, steps, strict=True)]
            return np.array(values, dtype=np.float32).reshape(-1, 1, 1, 1)

        return cls(*(column(name) for name in _COEFFICIENTS))


_COEFFICIENTS = ("alpha_t", "sigma_t", "alpha_s", "sigma_s", "c_z", "c_x", "std")


def uses_noise(sampler: str) -> bool:
    """Whether `sampler`'s update draws fresh noise (callers skip drawing it for DDIM)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; samplers: {sorted(SAMPLERS)}")
    return sampler == "ancestral"


def step_update(sampler: str, z_t: Any, x_hat: Any, c: StepCoefficients, eps: Any = None) -> Any:
    """z at the next time from z_t and the denoiser's x_hat: the one per-step update of every sampler loop.

    The sampler loop here, step-level batching in the service and the GPU bench's graphed loop all
    call this, on numpy arrays or torch tensors. `eps` is step i's noise (ancestral only).
    """
    if sampler == "ancestral":
        if eps is None:
            raise ValueError("the ancestral update needs the step's noise eps")
        return ancestral_step(z_t, x_hat, c.c_z, c.c_x, c.std, eps)
    if sampler == "ddim":
        return ddim_step(z_t, x_hat, c.alpha_t, c.sigma_t, c.alpha_s, c.sigma_s)
    raise ValueError(f"no per-step update for sampler {sampler!r}")


def _initial_z(noise: NoiseSource, like: Any | None) -> Any:
    z = noise.initial()
    return z if like is None or isinstance(z, type(like)) else as_array_like(z, like)


def _step_noise(noise: NoiseSource, j: int, like: Any) -> Any:
    eps = noise.step(j)
    return eps if isinstance(eps, type(like)) else as_array_like(eps, like)


def _sample(
    sampler: str,
    denoise: Denoise,
    steps: int | StepPlan,
    cond: Any,
    w: Any,
    noise: NoiseSource,
    like: Any | None,
) -> Any:
    """The loop both samplers share: denoise at t_i, then `step_update` to z at s_i; return the last x_hat."""
    plan = steps if isinstance(steps, StepPlan) else step_plan(steps)
    z = _initial_z(noise, like)
    x_hat = z
    for i in range(plan.steps):
        x_hat = denoise(z, batch_vector(plan.t[i], z), cond, w)
        if i < plan.steps - 1:
            eps = _step_noise(noise, i, z) if uses_noise(sampler) else None
            z = step_update(sampler, z, x_hat, StepCoefficients.at(plan, i), eps)
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
    return _sample("ancestral", denoise, steps, cond, w, noise, like)


def ddim_sample(
    denoise: Denoise,
    steps: int | StepPlan,
    cond: Any,
    w: Any,
    noise: NoiseSource,
    like: Any | None = None,
) -> Any:
    """k-step deterministic DDIM from z_1 ~ N(0, I); returns the last x_hat."""
    return _sample("ddim", denoise, steps, cond, w, noise, like)


SAMPLERS: dict[str, Callable[..., Any]] = {"ancestral": ancestral_sample, "ddim": ddim_sample}
