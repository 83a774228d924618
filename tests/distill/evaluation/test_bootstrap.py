"""Bootstrap intervals over images: counts against gathered resamples, coverage, the FD bias shift."""

from __future__ import annotations

import numpy as np
import pytest

from distill.evaluation import bootstrap as bs
from distill.evaluation.metrics import frechet_distance, kernel_inception_distance


def _counts_from(idx: np.ndarray) -> np.ndarray:
    n = idx.shape[1]
    return np.stack([np.bincount(row, minlength=n) for row in idx]).astype(np.float64)


def test_resample_counts_are_deterministic_multisets_of_n_images():
    c = bs.resample_counts(50, 30, seed=3)
    assert c.shape == (30, 50) and np.all(c.sum(axis=1) == 50) and np.all(c >= 0)
    assert np.array_equal(c, bs.resample_counts(50, 30, seed=3))
    assert not np.array_equal(c, bs.resample_counts(50, 30, seed=4))
    # About 63% distinct images per resample, as drawing n of n with replacement gives.
    assert 0.55 < float((c > 0).mean()) < 0.72
    with pytest.raises(ValueError, match="empty"):
        bs.resample_counts(0)
    with pytest.raises(ValueError, match="resamples"):
        bs.resample_counts(5, 0)


def test_percentile_interval_ignores_undefined_resamples():
    v = np.concatenate([np.arange(101, dtype=float), [np.nan, np.nan]])
    assert bs.percentile_interval(v) == pytest.approx([2.5, 97.5])
    assert bs.percentile_interval(np.array([np.nan])) is None
    lo, hi = bs.shifted_interval(np.arange(101, dtype=float), estimate=40.0)
    assert (lo, hi) == pytest.approx((-7.5, 87.5))  # moved down by mean(values) - estimate = 10


def test_mean_resampled_equals_the_mean_of_the_gathered_resample():
    rng = np.random.default_rng(0)
    values = rng.random(40)
    mask = rng.random(40) < 0.5
    idx = rng.integers(0, 40, size=(25, 40))
    got = bs.mean_resampled(_counts_from(idx), values, mask)
    want = [values[row][mask[row]].mean() if mask[row].any() else np.nan for row in idx]
    assert np.allclose(got, want, equal_nan=True)
    values[3] = np.nan  # undefined values (grain of an image with no background) are left out
    got = bs.mean_resampled(_counts_from(idx), values)
    want = [np.nanmean(values[row]) for row in idx]
    assert np.allclose(got, want)


def test_share_interval_covers_the_true_rate():
    rng = np.random.default_rng(1)
    counts = bs.resample_counts(300, 200, seed=0)
    hits = 0
    for _ in range(60):
        ci = bs.percentile_interval(bs.mean_resampled(counts, rng.random(300) < 0.3))
        hits += ci[0] <= 0.3 <= ci[1]
    assert hits >= 51  # nominal 95%: at least 85% of 60 intervals cover


def _features(seed: int, n: int = 300, d: int = 6, shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((d, d))
    ref = rng.standard_normal((n, d)) @ mix
    gen = ref + 0.7 * rng.standard_normal((n, d)) + shift  # paired with its prompt's reference
    return ref, gen


def test_fd_resampled_equals_fd_on_the_gathered_resample():
    ref, gen = _features(0)
    rng = np.random.default_rng(2)
    idx = rng.integers(0, len(ref), size=(5, len(ref)))
    got = bs.fd_resampled(_counts_from(idx), ref, gen)[0]
    want = [frechet_distance(ref[row], gen[row]) for row in idx]
    assert np.allclose(got, want, rtol=1e-8)
    full = bs.fd_resampled(np.ones((1, len(ref))), ref, gen)[0][0]
    assert full == pytest.approx(frechet_distance(ref, gen), rel=1e-9)
    with pytest.raises(ValueError, match="align"):
        bs.fd_resampled(np.ones((1, len(ref))), ref, gen[:-1])


def test_fd_bootstrap_is_biased_up_and_the_shifted_interval_is_centred_on_the_estimate():
    ref, gen = _features(1)
    counts = bs.resample_counts(len(ref), 200)
    (values,) = bs.fd_resampled(counts, ref, gen)
    fd = frechet_distance(ref, gen)
    plain = bs.percentile_interval(values)
    shifted = bs.shifted_interval(values, fd)
    assert values.mean() > fd  # duplicates inflate the covariance noise term
    assert shifted[0] < fd < shifted[1]
    assert shifted[1] - shifted[0] == pytest.approx(plain[1] - plain[0])


def test_paired_fd_difference_is_tighter_than_either_interval():
    ref, a = _features(3)
    b = a + 0.05 * np.random.default_rng(4).standard_normal(a.shape) + 0.1
    counts = bs.resample_counts(len(ref), 200)
    va, vb = bs.fd_resampled(counts, ref, a, b)
    ca = bs.percentile_interval(va)
    cd = bs.percentile_interval(vb - va)
    assert cd[1] - cd[0] < 0.5 * (ca[1] - ca[0])


def test_kid_resampled_full_estimate_matches_kid_and_its_bootstrap_is_unbiased():
    ref, gen = _features(5, n=200)
    (est,), (values,) = bs.kid_resampled(bs.resample_counts(200, 300), ref / 3, gen / 3)
    kid, _ = kernel_inception_distance(ref / 3, gen / 3, subsets=1, subset_size=200)
    assert est == pytest.approx(kid, rel=1e-9)
    # Duplicate images add no self-similarity: the resampled values centre on the estimate.
    assert abs(values.mean() - est) < 0.25 * values.std()
