"""The one guidance path: the combine, and the doubled batch on numpy and torch, all rows or some."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fewstep.guidance import doubled_guidance, guidance_combine, per_image_w

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A network call that depends on each row alone and records its batch sizes."""

    def __init__(self) -> None:
        self.sizes: list[int] = []

    def __call__(self, z, t, states, mask):
        self.sizes.append(z.shape[0])
        text = (states * mask[..., None]).sum(axis=(1, 2))
        return 0.5 * z * (1 - t.reshape(-1, 1, 1, 1)) + 0.1 * text.reshape(-1, 1, 1, 1)


def inputs(b: int = 3):
    rng = np.random.default_rng(1)
    z = rng.standard_normal((b, 2, 4, 4)).astype(np.float32)
    t = rng.random(b).astype(np.float32)
    text = (rng.standard_normal((b, 5, 6)).astype(np.float32), np.ones((b, 5), np.float32))
    null = (rng.standard_normal((b, 5, 6)).astype(np.float32), np.ones((b, 5), np.float32))
    return z, t, text, null


def test_the_combine_is_cfg_in_x_space_and_exact_at_w_one():
    x_c, x_n = np.float32([1.0, 2.0]), np.float32([0.5, 0.5])
    np.testing.assert_allclose(guidance_combine(x_c, x_n, 3.0), x_n + 3.0 * (x_c - x_n))
    assert guidance_combine(x_c, x_n, 1.0) is x_c


def test_one_doubled_call_equals_two_separate_evaluations():
    z, t, text, null = inputs()
    call = Recorder()
    w = np.float32([1.5, 3.0, 7.5])
    out = doubled_guidance(call, z, t, text, null, w)
    assert call.sizes == [6]
    cond, uncond = call(z, t, *text), call(z, t, *null)
    np.testing.assert_allclose(out, uncond + w.reshape(-1, 1, 1, 1) * (cond - uncond), rtol=1e-6)


def test_guided_rows_only_leave_the_others_exactly_conditional_and_independent_of_neighbours():
    z, t, text, null = inputs()
    call = Recorder()
    w = np.float32([1.0, 4.0, 1.0])
    out = doubled_guidance(call, z, t, text, null, w, rows=np.flatnonzero(w != 1.0))
    assert call.sizes == [3 + 1]
    cond = call(z, t, *text)
    np.testing.assert_array_equal(out[[0, 2]], cond[[0, 2]])
    alone = doubled_guidance(call, z[1:2], t[1:2], (text[0][1:2], text[1][1:2]), (null[0][1:2], null[1][1:2]), w[1:2])
    np.testing.assert_array_equal(out[1], alone[0])


def test_numpy_and_torch_agree():
    torch = pytest.importorskip("torch")
    z, t, text, null = inputs()
    w = np.float32([1.5, 3.0, 7.5])
    ref = doubled_guidance(Recorder(), z, t, text, null, w)
    as_t = [torch.from_numpy(a) for a in (z, t, *text, *null)]
    for w_t in (w, torch.from_numpy(w)):
        out = doubled_guidance(Recorder(), as_t[0], as_t[1], (as_t[2], as_t[3]), (as_t[4], as_t[5]), w_t)
        assert isinstance(out, torch.Tensor)
        np.testing.assert_allclose(out.numpy(), ref, rtol=1e-6, atol=1e-6)
    assert per_image_w(2.0, as_t[0]) == 2.0 and per_image_w(w, as_t[0]).shape == (3, 1, 1, 1)


def test_the_module_imports_without_torch():
    code = "import sys, fewstep.guidance, fewstep.sampler; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
