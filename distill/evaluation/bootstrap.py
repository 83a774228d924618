"""Bootstrap intervals over images for the evaluation figures (numpy only).

Why a bootstrap: FD, KID and the adherence shares are computed on a fixed, finite prompt set, and
the gaps between two distilled students are often smaller than the figures' own sampling spread
(FD on 500 images has a bootstrap sd of about 50 here). Every interval is a 95% percentile interval
over `resamples` resamples of the image indices, drawn with a fixed seed so that a row is
reproducible and two rows (or two sides of a paired comparison) resample the same way.

One resample is a vector of counts c (how often each image was drawn, summing to n). Every
statistic is written over counts rather than over gathered copies, so one `(B, n)` count matrix
drives all of them: generated and reference features of an image move together (they share a
prompt), and in a paired comparison both models' images of a prompt move together.

Bias: FD (and the KID U-statistic) computed on a resample with duplicated images is biased upward
against the same figure on n distinct images (a resample holds about 63% distinct images). The
percentile interval is therefore shifted by the bootstrap's own bias estimate, mean(theta*) -
theta_hat, so that it describes the spread of the figure at this image count around the figure
itself (`shifted_interval`). For means and shares the shift is ~0 and the plain percentile interval
is used.
"""

from __future__ import annotations

import numpy as np

from distill.evaluation.metrics import trace_sqrt_product

__all__ = [
    "BOOTSTRAP_SEED",
    "LEVEL",
    "RESAMPLES",
    "fd_resampled",
    "kid_resampled",
    "mean_resampled",
    "percentile_interval",
    "resample_counts",
    "shifted_interval",
]

RESAMPLES = 500
BOOTSTRAP_SEED = 20240
LEVEL = 0.95


def resample_counts(n: int, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) float64 counts: row b says how often each of the n images is in resample b."""
    if n < 1:
        raise ValueError(f"cannot resample an empty set (n = {n})")
    if resamples < 1:
        raise ValueError(f"resamples must be >= 1, got {resamples}")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    flat = (idx + n * np.arange(resamples)[:, None]).ravel()
    return np.bincount(flat, minlength=resamples * n).reshape(resamples, n).astype(np.float64)


def percentile_interval(values: np.ndarray, level: float = LEVEL) -> list[float] | None:
    """[lo, hi] percentile interval of bootstrap values, ignoring NaN (resamples where the statistic
    is undefined, e.g. a share over a subset the resample happened to miss); None if all are NaN."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return [float(lo), float(hi)]


def shifted_interval(values: np.ndarray, estimate: float, level: float = LEVEL) -> list[float] | None:
    """Percentile interval moved by the bootstrap bias estimate mean(values) - estimate (see the
    module docstring): for FD and KID, whose resampled values are inflated by duplicate images."""
    ci = percentile_interval(values, level)
    if ci is None:
        return None
    v = np.asarray(values, dtype=np.float64)
    bias = float(np.mean(v[np.isfinite(v)])) - float(estimate)
    return [ci[0] - bias, ci[1] - bias]


def mean_resampled(counts: np.ndarray, values: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per resample, the mean of `values` over the images in `mask` (all finite values if None);
    NaN where a resample holds none of them. A share is the mean of 0/1 values."""
    v = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(v) if mask is None else (np.asarray(mask, dtype=bool) & np.isfinite(v))
    w = keep.astype(np.float64)
    num = counts @ np.where(keep, v, 0.0)
    den = counts @ w
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.maximum(den, 1e-300), np.nan)


def fd_resampled(counts: np.ndarray, ref: np.ndarray, *gens: np.ndarray) -> list[np.ndarray]:
    """FD between the resampled reference features and each resampled generated set, per resample.

    All sets are resampled with the same counts (rows of a set are images of the same prompts).
    The reference's covariance root is factored once per resample and shared by every generated
    set, which is what makes a paired comparison cost about 1.5 single bootstraps. ~20 ms per
    resample and generated set at n = 2000, D = 256 on two CPU cores."""
    ref = np.asarray(ref, dtype=np.float64)
    gens = tuple(np.asarray(g, dtype=np.float64) for g in gens)
    for g in gens:
        if g.shape != ref.shape:
            raise ValueError(f"generated features {g.shape} and reference features {ref.shape} must align")
    if counts.shape[1] != ref.shape[0]:
        raise ValueError(f"counts cover {counts.shape[1]} images but the features {ref.shape[0]}")
    out = [np.empty(counts.shape[0]) for _ in gens]
    m = counts.sum(axis=1)
    mu_r = counts @ ref / m[:, None]
    mu_g = [counts @ g / m[:, None] for g in gens]
    for b, c in enumerate(counts):
        s_r = (ref * c[:, None]).T @ ref
        s_r -= m[b] * np.outer(mu_r[b], mu_r[b])
        s_r /= m[b] - 1
        factor = None
        for k, g in enumerate(gens):
            s_g = (g * c[:, None]).T @ g
            s_g -= m[b] * np.outer(mu_g[k][b], mu_g[k][b])
            s_g /= m[b] - 1
            tr, factor = trace_sqrt_product(s_r, s_g, factor)
            diff = mu_r[b] - mu_g[k][b]
            out[k][b] = diff @ diff + np.trace(s_r) + np.trace(s_g) - 2.0 * tr
    return out


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def kid_resampled(counts: np.ndarray, ref: np.ndarray, *gens: np.ndarray) -> tuple[list[float], list[np.ndarray]]:
    """KID (polynomial-kernel MMD^2) of each generated set against the reference: the estimate on
    all n images and its value per resample.

    Duplicates in a resample must not add self-similarity: the within-set kernel sums run over
    pairs of distinct source images (weights c_i c_j, i != j), and the cross term keeps the
    full-sample estimator's split into pairs of distinct prompts (share 1 - 1/n) and the n
    same-prompt pairs (share 1/n, which are correlated: a generated image and the render of its
    own prompt), each averaged under the resample's weights.
    Features should be normalised as the caller's point estimate is (see `distill.evaluation.evaluate.score`).
    The kernel matrices are n x n (32 MB each at n = 2000)."""
    ref = np.asarray(ref, dtype=np.float64)
    full = np.ones((1, ref.shape[0]))
    both = np.vstack([full, counts])
    sq = (both**2).sum(axis=1)
    m = both.sum(axis=1)

    def within(k: np.ndarray) -> np.ndarray:
        diag = np.diagonal(k)
        return (np.einsum("bi,bi->b", both @ k, both) - (both**2) @ diag) / (m**2 - sq)

    kxx = within(_poly_kernel(ref, ref))
    estimates, values = [], []
    for g in gens:
        g = np.asarray(g, dtype=np.float64)
        kyy = within(_poly_kernel(g, g))
        k = _poly_kernel(ref, g)
        n = k.shape[0]
        same = both @ np.diagonal(k) / m
        kxy = (1 - 1 / n) * within(k) + (1 / n) * same
        mmd = kxx + kyy - 2.0 * kxy
        estimates.append(float(mmd[0]))
        values.append(mmd[1:])
    return estimates, values
