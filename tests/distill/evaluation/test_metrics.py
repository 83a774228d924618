"""Sample-quality metrics: closed forms, unbiasedness, brute-force references and failure modes."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import linalg

from distill.evaluation import metrics
from distill.evaluation.metrics import (
    frechet_distance,
    frechet_distance_gaussians,
    kernel_inception_distance,
    precision_recall,
    total_variation,
)

# A fixed pair of diagonal Gaussians: N(0, I) vs N(M, diag(S^2)).
M = np.array([1.0, -0.5, 0.25, 0.0])
S = np.array([0.5, 1.0, 2.0, 1.5])
FD_EXACT = float(M @ M + np.sum(1.0 + S**2 - 2.0 * S))  # = 1.3125 + 1.5 = 2.8125


# --------------------------------------------------------------------------- Fréchet distance


def test_fd_gaussians_matches_closed_form_for_diagonal_covariances():
    assert FD_EXACT == pytest.approx(2.8125)
    got = frechet_distance_gaussians(np.zeros(4), np.eye(4), M, np.diag(S**2))
    assert got == pytest.approx(FD_EXACT, rel=1e-10, abs=1e-12)
    # 1-D: (m1 - m2)^2 + (s1 - s2)^2
    assert frechet_distance_gaussians([2.0], [[9.0]], [-1.0], [[4.0]]) == pytest.approx(9.0 + 1.0, rel=1e-12)


def test_fd_gaussians_matches_symmetric_form_for_non_commuting_covariances():
    # Tr (S1 S2)^(1/2) = Tr (S1^(1/2) S2 S1^(1/2))^(1/2), and the latter is a symmetric PSD root
    # computable by eigendecomposition: an independent check of the sqrtm path.
    rng = np.random.default_rng(0)
    d = 6
    a, b = rng.standard_normal((d, d)), rng.standard_normal((d, d))
    s1, s2 = a @ a.T + 0.1 * np.eye(d), b @ b.T + 0.1 * np.eye(d)
    mu1, mu2 = rng.standard_normal(d), rng.standard_normal(d)
    r1 = linalg.sqrtm(s1).real
    w = np.linalg.eigvalsh(r1 @ s2 @ r1)
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2.0 * np.sqrt(np.clip(w, 0, None)).sum())
    assert frechet_distance_gaussians(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    assert frechet_distance_gaussians(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_fd_on_large_samples_approaches_closed_form():
    # With N = 100k per set the estimate's spread is dominated by the mean term 2 M·δ with
    # Var = 4 M^T (I + diag S^2) M / N = 8.25 / N, i.e. std ≈ 0.009; the covariance/trace term adds
    # a similar amount and an O(D/N) upward bias. Over 10 seeds at N = 50k the empirical std was
    # 0.024, so at N = 100k a tolerance of 0.1 is > 5 std while still < 4% of the value 2.81.
    rng = np.random.default_rng(1)
    n = 100_000
    a = rng.standard_normal((n, 4))
    b = M + S * rng.standard_normal((n, 4))
    assert frechet_distance(a, b) == pytest.approx(FD_EXACT, abs=0.1)
    # and it is not trivially close: a different shift gives a clearly different value
    assert abs(frechet_distance(a, b + 1.0) - FD_EXACT) > 1.0


def test_fd_self_is_zero_and_symmetric():
    rng = np.random.default_rng(2)
    a = rng.standard_normal((500, 16)) @ rng.standard_normal((16, 16))
    b = rng.standard_normal((400, 16)) * 2.0 + 1.0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    ab, ba = frechet_distance(a, b), frechet_distance(b, a)
    assert ab > 10.0
    assert ab == pytest.approx(ba, rel=1e-8)


def test_fd_rank_deficient_covariances_are_handled():
    # Fewer samples than dimensions (rank-deficient covariances), and an exactly duplicated column.
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((20, 64)), rng.standard_normal((20, 64))
    fd = frechet_distance(a, b)
    assert np.isfinite(fd) and fd > 0
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-4)
    c = rng.standard_normal((2000, 3))
    c = np.hstack([c, c[:, :1]])
    assert frechet_distance(c, c) == pytest.approx(0.0, abs=1e-6)
    assert frechet_distance(c, c + np.array([1.0, 0, 0, 1.0])) == pytest.approx(2.0, abs=1e-6)


def test_fd_falls_back_to_eps_offset_when_sqrtm_is_not_finite(monkeypatch):
    real_sqrtm = linalg.sqrtm
    calls = []

    def flaky_sqrtm(x):
        calls.append(x.copy())
        if len(calls) == 1:
            return np.full_like(x, np.nan)
        return real_sqrtm(x)

    monkeypatch.setattr(metrics.linalg, "sqrtm", flaky_sqrtm)
    eps = 1e-6
    got = frechet_distance_gaussians(np.zeros(4), np.eye(4), M, np.diag(S**2), eps=eps)
    assert len(calls) == 2
    np.testing.assert_allclose(calls[1], (np.eye(4) + eps * np.eye(4)) @ (np.diag(S**2) + eps * np.eye(4)))
    assert got == pytest.approx(FD_EXACT, abs=1e-5)


def test_fd_rejects_bad_shapes():
    with pytest.raises(ValueError):
        frechet_distance(np.zeros((10, 3)), np.zeros((10, 4)))
    with pytest.raises(ValueError):
        frechet_distance(np.zeros(10), np.zeros(10))


# --------------------------------------------------------------------------- KID


def _kid_bruteforce(x: np.ndarray, y: np.ndarray) -> float:
    d = x.shape[1]

    def k(u, v):
        return (float(u @ v) / d + 1.0) ** 3

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2.0 * kxy


def test_kid_matches_bruteforce_unbiased_mmd():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((25, 5)), rng.standard_normal((25, 5)) + 0.3
    # subset_size >= n: each subset is a permutation of the whole set, and MMD^2 is permutation-invariant
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=100, seed=0)
    assert mean == pytest.approx(_kid_bruteforce(x, y), rel=1e-10)
    assert std == pytest.approx(0.0, abs=1e-12)


def test_kid_is_unbiased_on_equal_distributions():
    # Each trial is one unbiased MMD^2 estimate on independent samples from the same Gaussian, so
    # the mean over trials must be within ~3 standard errors of 0, and individual estimates must
    # sometimes be negative (a biased V-statistic would always be > 0).
    vals = []
    for t in range(30):
        rng = np.random.default_rng(100 + t)
        x, y = rng.standard_normal((200, 8)), rng.standard_normal((200, 8))
        vals.append(kernel_inception_distance(x, y, subsets=1, subset_size=200, seed=t)[0])
    vals = np.array(vals)
    stderr = vals.std(ddof=1) / np.sqrt(len(vals))
    assert abs(vals.mean()) < 3.0 * stderr
    assert 5 <= (vals < 0).sum() <= 25


def test_kid_positive_for_shifted_distributions_and_deterministic():
    rng = np.random.default_rng(5)
    a = rng.standard_normal((600, 32))
    b = rng.standard_normal((600, 32))
    same = kernel_inception_distance(a, b, subsets=5, subset_size=300, seed=0)
    shifted = kernel_inception_distance(a, b + 0.5, subsets=5, subset_size=300, seed=0)
    assert shifted[0] > 10.0 * shifted[1] > 0
    assert shifted[0] > 20.0 * abs(same[0])
    assert kernel_inception_distance(a, b, subsets=5, subset_size=300, seed=0) == same
    assert kernel_inception_distance(a, b, subsets=5, subset_size=300, seed=1) != same


# --------------------------------------------------------------------------- precision / recall


def _pr_bruteforce(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    def radii(x):
        d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=-1)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    def cov(q, s, r):
        d = np.linalg.norm(q[:, None, :] - s[None, :, :], axis=-1)
        return float((d <= r[None, :]).any(axis=1).mean())

    return cov(fake, real, radii(real)), cov(real, fake, radii(fake))


def test_precision_recall_hand_computed_excludes_self():
    real = np.array([[0.0], [1.0], [3.0], [7.0]])  # k=1 radii: 1, 1, 2, 4
    fake = np.array([[-0.5], [2.5], [5.5], [20.0]])  # k=1 radii: 3, 3, 3, 14.5
    # fake inside real balls: -0.5 (ball of 0), 2.5 (ball of 3), 5.5 (ball of 7); 20 is not -> 3/4
    # real inside fake balls: 0, 1 (ball of -0.5), 3 (ball of 2.5), 7 (ball of 5.5 or 20) -> 4/4
    assert precision_recall(real, fake, k=1) == pytest.approx((0.75, 1.0))
    # k=2 real radii: 3, 2, 3, 6 -> 20 still outside; fake radii: 6, 3, 6, 17.5 -> all real covered
    assert precision_recall(real, fake, k=2) == pytest.approx((0.75, 1.0))
    # a tight real set that fake sits beside: real radii (k=1) are 0.1, fake is 0.5 away
    tight = np.array([[0.0], [0.1], [0.2]])
    assert precision_recall(tight, tight + 0.5, k=1) == pytest.approx((0.0, 0.0))


def test_precision_recall_matches_bruteforce_and_chunking():
    rng = np.random.default_rng(6)
    real = rng.standard_normal((150, 6))
    fake = rng.standard_normal((120, 6)) + 0.8
    expected = _pr_bruteforce(real, fake, k=3)
    assert 0.05 < expected[0] < 0.95 and 0.05 < expected[1] < 0.95  # non-trivial case
    assert precision_recall(real, fake, k=3) == pytest.approx(expected)
    assert precision_recall(real, fake, k=3, chunk_size=7) == pytest.approx(expected)
    assert precision_recall(real, fake, k=3, dtype=np.float32) == pytest.approx(expected, abs=1.0 / 120)


def test_precision_recall_identical_distributions_near_one():
    rng = np.random.default_rng(7)
    p, r = precision_recall(rng.standard_normal((1000, 4)), rng.standard_normal((1000, 4)), k=3)
    assert p > 0.9 and r > 0.9


def test_precision_recall_mode_collapse_and_far_away():
    rng = np.random.default_rng(8)
    n = 1000
    real = rng.standard_normal((n, 4))
    real[:, 0] += np.where(rng.random(n) < 0.5, -10.0, 10.0)  # two well-separated modes
    collapsed = rng.standard_normal((n, 4))
    collapsed[:, 0] += 10.0  # only one mode
    p, r = precision_recall(real, collapsed, k=3)
    assert p > 0.9
    assert 0.4 < r < 0.55
    p_far, r_far = precision_recall(real, collapsed + 100.0, k=3)
    assert p_far == 0.0 and r_far == 0.0


def test_precision_recall_rejects_too_few_samples():
    with pytest.raises(ValueError):
        precision_recall(np.zeros((3, 2)), np.ones((10, 2)), k=3)


# --------------------------------------------------------------------------- total variation


def test_total_variation_hand_computed_dict_and_array():
    counts = {"a": 2, "b": 6, "c": 2}
    uniform = {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}
    # p = (0.2, 0.6, 0.2, 0), q = 0.25 each: 0.5 * (0.05 + 0.35 + 0.05 + 0.25) = 0.35
    assert total_variation(counts, uniform) == pytest.approx(0.35)
    assert total_variation(np.array([2, 6, 2, 0]), np.full(4, 0.25)) == pytest.approx(0.35)
    # an observed category the reference never expects counts fully
    assert total_variation({"a": 1, "x": 1}, {"a": 1.0}) == pytest.approx(0.5)
    assert total_variation({"x": 5}, {"a": 0.5, "b": 0.5}) == pytest.approx(1.0)


def test_total_variation_zero_for_matching_distributions():
    assert total_variation({"red": 25, "blue": 25, "black": 50}, {"black": 0.5, "red": 0.25, "blue": 0.25}) == 0.0
    assert total_variation(np.array([25, 25, 50]), np.array([0.25, 0.25, 0.5])) == 0.0


def test_total_variation_rejects_bad_input():
    with pytest.raises(ValueError):
        total_variation(np.array([1, 2]), np.array([0.5, 0.25, 0.25]))
    with pytest.raises(ValueError):
        total_variation({"a": 0}, {"a": 1.0})
    with pytest.raises(ValueError):
        total_variation({"a": 1}, {"a": 0.5})
    with pytest.raises(ValueError):
        total_variation({"a": -1, "b": 2}, {"a": 0.5, "b": 0.5})
    with pytest.raises(TypeError):
        total_variation({"a": 1}, np.array([1.0]))


# --------------------------------------------------------------------------- trace of the root


def _random_cov(rng: np.random.Generator, d: int, rank: int | None = None) -> np.ndarray:
    a = rng.standard_normal((d, rank or d))
    return a @ a.T / d


def test_trace_sqrt_product_matches_sqrtm_and_reuses_its_factor():
    rng = np.random.default_rng(0)
    s1, s2, s3 = (_random_cov(rng, 12) for _ in range(3))
    got, factor = metrics.trace_sqrt_product(s1, s2)
    assert got == pytest.approx(float(np.trace(linalg.sqrtm(s1 @ s2)).real), rel=1e-9)
    again, _ = metrics.trace_sqrt_product(s1, s3, factor)
    assert again == pytest.approx(float(np.trace(linalg.sqrtm(s1 @ s3)).real), rel=1e-9)


def test_trace_sqrt_product_handles_a_singular_first_covariance():
    rng = np.random.default_rng(1)
    s1, s2 = _random_cov(rng, 10, rank=4), _random_cov(rng, 10)
    got, _ = metrics.trace_sqrt_product(s1, s2)
    # Tr sqrt(S1 S2) = Tr sqrt(S1^1/2 S2 S1^1/2), the symmetric form, real and exact.
    root = linalg.sqrtm(s1).real
    want = float(np.trace(linalg.sqrtm(root @ s2 @ root)).real)
    assert got == pytest.approx(want, rel=1e-6)
    with pytest.raises(ValueError, match="square"):
        metrics.trace_sqrt_product(s1, s2[:5, :5])


# --------------------------------------------------------------------------- grain


def _flat(n: int = 4, size: int = 16, level: float = 128.0) -> np.ndarray:
    return np.full((n, size, size, 3), level)


def test_high_frequency_energy_is_zero_on_flat_images_and_on_ramps():
    masks = np.ones((4, 16, 16), dtype=bool)
    assert np.all(metrics.high_frequency_energy(_flat(), masks) == 0.0)
    ramp = np.broadcast_to(np.linspace(0, 200, 16)[None, None, :, None], (4, 16, 16, 3))
    assert np.allclose(metrics.high_frequency_energy(ramp, masks), 0.0, atol=1e-9)  # shading is not grain


def test_high_frequency_energy_reads_as_the_noise_sd_and_is_monotone():
    rng = np.random.default_rng(0)
    masks = np.ones((8, 32, 32), dtype=bool)
    noise = rng.standard_normal((8, 32, 32, 3))
    values = [float(metrics.high_frequency_energy(_flat(8, 32) + s * noise, masks).mean()) for s in (1, 2, 4, 8)]
    assert values == sorted(values) and values[0] > 0
    assert values[2] == pytest.approx(4.0, rel=0.1)  # i.i.d. noise of sd 4 levels scores about 4


def test_high_frequency_energy_only_counts_masked_pixels():
    rng = np.random.default_rng(1)
    img = _flat(1, 16)
    img[0, :, 8:] += 20 * rng.standard_normal((16, 8, 3))  # noisy right half
    left = np.zeros((1, 16, 16), dtype=bool)
    left[0, :, :6] = True  # two columns away from the noise: the Laplacian never reaches it
    assert metrics.high_frequency_energy(img, left)[0] == 0.0
    assert metrics.high_frequency_energy(img, ~left)[0] > 5
    tiny = np.zeros((1, 16, 16), dtype=bool)
    tiny[0, 0, :3] = True
    assert np.isnan(metrics.high_frequency_energy(img, tiny)[0])  # too few pixels to measure


def test_high_frequency_energy_rejects_bad_input():
    with pytest.raises(ValueError, match="masks"):
        metrics.high_frequency_energy(_flat(2), np.ones((2, 8, 8), dtype=bool))
    with pytest.raises(ValueError, match="images"):
        metrics.high_frequency_energy(np.zeros((16, 16)), np.ones((16, 16), dtype=bool))
    bad = _flat(1)
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        metrics.high_frequency_energy(bad, np.ones((1, 16, 16), dtype=bool))


def test_fd_extrapolated_removes_most_of_the_sample_size_bias():
    # Two Gaussians with the same covariance and means apart by delta: FD = |delta|^2 exactly. The
    # plug-in estimate at N images is biased upward by about tr(C) d / N; the intercept in 1/N is not.
    rng = np.random.default_rng(0)
    d, n = 16, 600
    delta = np.zeros(d)
    delta[0] = 1.0
    a = rng.standard_normal((n, d))
    b = rng.standard_normal((n, d)) + delta
    truth = 1.0
    plug_in = metrics.frechet_distance(a, b)
    fit = metrics.frechet_distance_extrapolated(a, b, seed=1)
    assert plug_in - truth > 0.2  # the bias this corrects is real at this N
    assert abs(fit["fd_infinity"] - truth) < 0.4 * abs(plug_in - truth)
    assert fit["fd_slope"] > 0 and fit["sizes"][-1] == n
    assert metrics.frechet_distance_extrapolated(a, b, seed=1) == fit  # deterministic


def test_fd_extrapolated_refuses_too_few_rows():
    a = np.zeros((10, 16))
    with pytest.raises(ValueError, match="too few"):
        metrics.frechet_distance_extrapolated(a, a)
