"""Variance-preserving noise schedule and the exact Gaussian posterior q(z_s | z_t, x).

The forward process is z_t = alpha_t x + sigma_t eps with alpha_t^2 + sigma_t^2 = 1 and t in [0, 1]
(`docs/moment-matching.md`, "Notation"). We parameterise it by the log signal-to-noise ratio
lambda_t = log(alpha_t^2 / sigma_t^2) of the cosine schedule, truncated to [LOGSNR_MIN, LOGSNR_MAX]
so that t = 1 is pure noise to within float32 (alpha_1 ~ 5.5e-4) and t = 0 is data to within
the same margin:

    lambda(t) = -2 log tan(a t + b),   a, b chosen so lambda(0) = LOGSNR_MAX, lambda(1) = LOGSNR_MIN.

Everything here is float64 numpy on the scalar side; the posterior coefficients are the one place
where precision matters (`1 - exp(lambda_t - lambda_s)` is computed with expm1, which keeps the
variance of close steps accurate where the naive sigma_t^2 - alpha_ts^2 sigma_s^2 cancels).

The x / eps / v conversions at the bottom use plain array operators so that they work on numpy
arrays and torch tensors alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

LOGSNR_MIN = -15.0
LOGSNR_MAX = 15.0

COSINE_B = math.atan(math.exp(-0.5 * LOGSNR_MAX))
COSINE_A = math.atan(math.exp(-0.5 * LOGSNR_MIN)) - COSINE_B


def logsnr(t: Any) -> np.ndarray:
    """Truncated-cosine log-SNR lambda_t (float64)."""
    t = np.asarray(t, dtype=np.float64)
    return -2.0 * np.log(np.tan(COSINE_A * t + COSINE_B))


def t_from_logsnr(lam: Any) -> np.ndarray:
    """Inverse of `logsnr` (float64)."""
    lam = np.asarray(lam, dtype=np.float64)
    return (np.arctan(np.exp(-0.5 * lam)) - COSINE_B) / COSINE_A


def alpha_sigma(t: Any) -> tuple[np.ndarray, np.ndarray]:
    """alpha_t = sqrt(sigmoid(lambda_t)), sigma_t = sqrt(sigmoid(-lambda_t)) (float64).

    Written via sigmoid of the log-SNR so that alpha^2 + sigma^2 = 1 to rounding for every t.
    """
    lam = logsnr(t)
    alpha = np.sqrt(1.0 / (1.0 + np.exp(-lam)))
    sigma = np.sqrt(1.0 / (1.0 + np.exp(lam)))
    return alpha, sigma


def time_grid(steps: int) -> np.ndarray:
    """The k-step grid t_i = 1 - i / k, i = 0..k, from noise (t = 1) down to data (t = 0)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return np.linspace(1.0, 0.0, steps + 1, dtype=np.float64)


@dataclass(frozen=True)
class Posterior:
    """q(z_s | z_t, x) = N(c_z z_t + c_x x, std^2 I) for s < t (float64 arrays or scalars).

    With alpha_ts = alpha_t / alpha_s and sigma_ts^2 = sigma_t^2 - alpha_ts^2 sigma_s^2:
        c_z = alpha_ts sigma_s^2 / sigma_t^2,  c_x = alpha_s sigma_ts^2 / sigma_t^2,
        std^2 = sigma_ts^2 sigma_s^2 / sigma_t^2.
    """

    c_z: np.ndarray
    c_x: np.ndarray
    std: np.ndarray


def posterior(t: Any, s: Any) -> Posterior:
    """Exact VP posterior coefficients for s < t, in float64 (`docs/moment-matching.md`).

    Uses sigma_ts^2 / sigma_t^2 = 1 - exp(lambda_t - lambda_s) (= -expm1(...)), which follows from
    the definitions and stays accurate when s is close to t. At s = 0 (lambda_s = LOGSNR_MAX) the
    draw is x scaled by alpha_0 with a tiny variance, i.e. the clean prediction to within 1e-3.
    """
    t = np.asarray(t, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if np.any(s >= t):
        raise ValueError("posterior needs s < t")
    lam_t, lam_s = logsnr(t), logsnr(s)
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_s, sigma_s = alpha_sigma(s)
    ratio = -np.expm1(lam_t - lam_s)  # sigma_ts^2 / sigma_t^2, in (0, 1]
    c_x = alpha_s * ratio
    c_z = (alpha_t / alpha_s) * (sigma_s**2 / sigma_t**2)
    std = np.sqrt(ratio) * sigma_s
    return Posterior(c_z=c_z, c_x=c_x, std=std)


@dataclass(frozen=True)
class StepPlan:
    """Everything a k-step sampler needs, precomputed in float64 for each step i = 0..k-1.

    Step i goes from t[i] to s[i] = t[i + 1]. The bundle manifest stores exactly these arrays so
    that the service never recomputes schedule maths.
    """

    t: np.ndarray  # (k,) current times
    s: np.ndarray  # (k,) next times
    alpha_t: np.ndarray
    sigma_t: np.ndarray
    alpha_s: np.ndarray
    sigma_s: np.ndarray
    c_z: np.ndarray
    c_x: np.ndarray
    std: np.ndarray

    @property
    def steps(self) -> int:
        return int(self.t.shape[0])

    def to_dict(self) -> dict[str, list[float]]:
        return {k: [float(v) for v in getattr(self, k)] for k in self.__dataclass_fields__}


def step_plan(steps: int, grid: np.ndarray | None = None) -> StepPlan:
    """Precompute the step plan for the uniform grid (or a given descending grid ending at 0)."""
    g = time_grid(steps) if grid is None else np.asarray(grid, dtype=np.float64)
    if g.ndim != 1 or g.shape[0] < 2 or np.any(np.diff(g) >= 0):
        raise ValueError("grid must be strictly decreasing with at least two points")
    t, s = g[:-1], g[1:]
    alpha_t, sigma_t = alpha_sigma(t)
    alpha_s, sigma_s = alpha_sigma(s)
    post = posterior(t, s)
    return StepPlan(t, s, alpha_t, sigma_t, alpha_s, sigma_s, post.c_z, post.c_x, post.std)


# --- parameterisation conversions (array-agnostic: numpy arrays or torch tensors) -------------


def x_from_eps(z: Any, eps: Any, alpha: Any, sigma: Any) -> Any:
    """x = (z - sigma eps) / alpha."""
    return (z - sigma * eps) / alpha


def eps_from_x(z: Any, x: Any, alpha: Any, sigma: Any) -> Any:
    """eps = (z - alpha x) / sigma."""
    return (z - alpha * x) / sigma


def v_from_x_eps(x: Any, eps: Any, alpha: Any, sigma: Any) -> Any:
    """v = alpha eps - sigma x (Salimans and Ho 2022, eq. 3's velocity)."""
    return alpha * eps - sigma * x


def x_from_v(z: Any, v: Any, alpha: Any, sigma: Any) -> Any:
    """x = alpha z - sigma v, exact for VP because alpha^2 + sigma^2 = 1."""
    return alpha * z - sigma * v


def eps_from_v(z: Any, v: Any, alpha: Any, sigma: Any) -> Any:
    """eps = sigma z + alpha v."""
    return sigma * z + alpha * v
