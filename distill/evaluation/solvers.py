"""Training-free fast-solver baselines: our denoiser driven by the diffusers multistep schedulers.

`diffusers_sample` runs DPM-Solver++ 2M (`DPMSolverMultistepScheduler`, algorithm_type="dpmsolver++",
solver_order=2), UniPC (`UniPCMultistepScheduler`, its default bh2 predictor-corrector of order 2) or
`DDIMScheduler` (eta = 0) over the same `denoise(z, t, cond, w) -> x_hat` callable that
`fewstep.sampler` uses. The schedulers are wired, not copied: they do all the solver maths, this
module only translates between our continuous time and their discrete timesteps.

Schedule mapping
----------------
Our process is continuous, t in [0, 1] with t = 1 noise (`fewstep.schedule.alpha_sigma`); the
schedulers index a discrete training schedule i = 0..N-1 by `alphas_cumprod[i]`. We identify

    discrete timestep i  <->  t_i = (i + 1) / N,     alphas_cumprod[i] = alpha(t_i)^2,

so i = N - 1 is t = 1 exactly, and the "timestep -1" that the schedulers step into at the end is
t = 0, taken as alpha = 1, sigma = 0 (our alpha(0)^2 = sigmoid(15) = 1 - 3e-7). The schedulers
take betas, not alphas_cumprod, so we pass `trained_betas` with beta_i = 1 - abar_i / abar_{i-1}
(abar_{-1} = 1), computed in float64; diffusers stores them in float32 and re-forms the cumulative
product in float32, which is the one source of mismatch against our float64 schedule: about 1e-6
relative in abar, and in sigma^2 = 1 - abar about 1e-5 at t = 1/16 but 0.4% at the smallest
t = 1/N (only grids with k close to N visit it). Every denoiser call at discrete timestep i gets
the continuous t_i = (i + 1) / N as a (B,) float32 vector, just like our samplers.

Options, and why
----------------
- prediction_type="sample": the denoiser returns an x-prediction; the schedulers convert it
  themselves (DPM-Solver++ and UniPC with predict_x0 integrate the data prediction directly).
- timestep_spacing="trailing": the inference timesteps are round(N - j N / k) - 1, j = 0..k-1,
  i.e. t = 1 - j / k: the first call is at t = 1 (pure noise, like ours) and, when N is a
  multiple of k, the grid is exactly our `fewstep.schedule.time_grid`. "linspace"/"leading" would
  start below t = 1 and never visit our grid. N therefore defaults to the smallest multiple of
  `steps` that is >= 1000 (`train_timesteps_for`).
- DDIM: set_alpha_to_one=True makes the last step land on alpha = 1, sigma = 0, where the DDIM
  update returns x_hat itself, which is what our `ddim_sample` returns; clip_sample=False and
  thresholding=False so that x_hat is never altered. `DDIMScheduler.step` moves to
  `timestep - N // k`, which is the next trailing timestep only when k divides N, so a
  non-multiple N is refused for DDIM. With these options diffusers-DDIM is our `ddim_sample` up to
  the float32 schedule (max abs difference a few 1e-6 for 4..32 steps on unit-variance noise).
- DPM-Solver++ / UniPC: final_sigmas_type="zero" ends at sigma = 0, so the last update is
  first order and returns the last x_hat exactly (again like ours, and no extra NFE);
  thresholding=False; lower_order_final=True (the diffusers default: below 15 steps the second
  last step also drops to first order, which stabilises very few-step sampling); karras/lu/
  exponential sigmas off so that the time grid stays ours. UniPC's corrector reuses the next
  model output, so it costs no extra call. Only DPM-Solver's set_timesteps takes an explicit
  timestep list (DDIM's and UniPC's do not), so the same "trailing" rule is used for all three; for
  these two a non-multiple N is allowed (the grid is then the rounded trailing one: they step
  between the scheduler's own sigmas, so it stays consistent, just not exactly ours).
- init_noise_sigma is 1 for all three VP schedulers; we still multiply by it so that the initial
  z = noise.initial() * init_noise_sigma matches ours (z_1 ~ N(0, I), sigma_1 = 1 to 2e-7).

Caveat for comparisons: all three run on our uniform-t grid, whose first step on the truncated cosine
spans lambda -15 -> -4.6 at k = 16 and whose last call is at lambda(1/k) = 4.6, where x_hat is a
posterior mean (on N(0, s^2) data the output std is then ~6% low for s = 0.25 even with an exact
denoiser). That is the same for our samplers, so the comparison is like for like.

NFE: the denoiser is called exactly `steps` times per image (`denoiser_calls`); a teacher with
classifier-free guidance doubles each call (`distill.kit.guidance.nfe_per_step`), which the caller
accounts for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

import numpy as np
import torch

from fewstep.sampler import NoiseSource, batch_vector
from fewstep.schedule import logsnr

SolverName = Literal["dpmpp-2m", "unipc", "ddim"]
SOLVERS: tuple[str, ...] = get_args(SolverName)
BASE_TRAIN_TIMESTEPS = 1000

Denoise = Callable[[Any, Any, Any, Any], Any]


def train_timesteps_for(steps: int, base: int = BASE_TRAIN_TIMESTEPS) -> int:
    """Smallest multiple of `steps` that is >= `base`: N for which the trailing grid is exactly ours."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return steps * -(-base // steps)


def discrete_times(num_train_timesteps: int) -> np.ndarray:
    """Continuous time of each discrete timestep: t_i = (i + 1) / N, i = 0..N-1 (float64)."""
    return np.arange(1, num_train_timesteps + 1, dtype=np.float64) / num_train_timesteps


def trained_betas(num_train_timesteps: int) -> np.ndarray:
    """betas with cumprod(1 - betas)[i] = alpha(t_i)^2 for t_i = (i + 1) / N (float64).

    beta_i = 1 - abar_i / abar_{i-1} with abar = sigmoid(lambda), abar_{-1} = 1, written as
    -expm1(log abar_i - log abar_{i-1}) so that the small betas near t = 0 keep their precision.
    """
    lam = logsnr(discrete_times(num_train_timesteps))
    log_abar = -np.logaddexp(0.0, -lam)  # log sigmoid(lambda)
    return -np.expm1(np.diff(log_abar, prepend=0.0))


def make_scheduler(name: SolverName, num_train_timesteps: int) -> Any:
    """A diffusers scheduler on our schedule (see the module docstring for each option)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler, UniPCMultistepScheduler

    common = dict(
        num_train_timesteps=num_train_timesteps,
        trained_betas=trained_betas(num_train_timesteps),
        prediction_type="sample",
        timestep_spacing="trailing",
        thresholding=False,
    )
    if name == "ddim":
        return DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True, steps_offset=0)
    if name == "dpmpp-2m":
        return DPMSolverMultistepScheduler(
            **common,
            algorithm_type="dpmsolver++",
            solver_order=2,
            solver_type="midpoint",
            lower_order_final=True,
            euler_at_final=False,
            final_sigmas_type="zero",
        )
    if name == "unipc":
        return UniPCMultistepScheduler(
            **common,
            solver_order=2,
            predict_x0=True,
            solver_type="bh2",
            lower_order_final=True,
            final_sigmas_type="zero",
        )
    raise ValueError(f"unknown solver {name!r}; expected one of {SOLVERS}")


def denoiser_calls(name: SolverName, steps: int) -> int:
    """Denoiser calls per image (NFE before guidance doubling): `steps` for all three solvers."""
    if name not in SOLVERS:
        raise ValueError(f"unknown solver {name!r}; expected one of {SOLVERS}")
    return steps


def _to_torch(value: Any, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return torch.as_tensor(value).to(device=device, dtype=dtype)


def diffusers_sample(
    denoise: Denoise,
    name: SolverName,
    steps: int,
    cond: Any,
    w: Any,
    noise: NoiseSource,
    like: Any | None = None,
    num_train_timesteps: int | None = None,
) -> Any:
    """k-step sampling of `denoise` with a diffusers solver; returns x (B, C, H, W) typed like `like`.

    `name` is "dpmpp-2m", "unipc" or "ddim" (the parity check for our `ddim_sample`). The solver
    state lives in torch (the schedulers need it): float32, or `like`'s floating dtype, on `like`'s
    device. The denoiser sees z and t of the array type of `like` (of `noise.initial()` when `like`
    is None), so a numpy/ONNX denoiser works too. `num_train_timesteps` defaults to
    `train_timesteps_for(steps)`; DDIM requires it to be a multiple of `steps`. Calls `denoise`
    exactly `steps` times.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    n_train = train_timesteps_for(steps) if num_train_timesteps is None else int(num_train_timesteps)
    if steps > n_train:
        raise ValueError(f"steps ({steps}) cannot exceed num_train_timesteps ({n_train})")
    if name == "ddim" and n_train % steps:
        raise ValueError(f"ddim needs num_train_timesteps ({n_train}) to be a multiple of steps ({steps})")
    scheduler = make_scheduler(name, n_train)

    z0 = noise.initial()
    if like is None:
        like = z0
    is_torch = isinstance(like, torch.Tensor)
    device = like.device if is_torch else torch.device("cpu")
    dtype = like.dtype if is_torch and like.is_floating_point() else torch.float32

    scheduler.set_timesteps(steps, device=device)
    if len(scheduler.timesteps) != steps:
        raise RuntimeError(f"{name}: scheduler made {len(scheduler.timesteps)} timesteps for {steps} steps")

    def outward(x: torch.Tensor) -> Any:
        return x if is_torch else x.detach().cpu().numpy().astype(like.dtype, copy=False)

    z = _to_torch(z0, device, dtype) * scheduler.init_noise_sigma
    for timestep in scheduler.timesteps:
        z_in = outward(scheduler.scale_model_input(z, timestep))
        t = (int(timestep) + 1) / n_train  # t_i = (i + 1) / N
        x_hat = _to_torch(denoise(z_in, batch_vector(t, z_in), cond, w), device, dtype)
        z = scheduler.step(x_hat, timestep, z).prev_sample
    return outward(z)
