"""What the backend tests share: which runtimes this machine has, the two tiny bundles, and the
contract every backend passes (each backend's test file runs it for its own settings)."""

from __future__ import annotations

import numpy as np
import pytest

from fewstep.bundle import load_manifest
from service.backends.base import Denoiser
from service.loader import denoiser_inputs, make_denoiser


def ort_providers() -> list[str]:
    import onnxruntime as ort

    return ort.get_available_providers()


def openvino_caps() -> set[str]:
    from service.backends.openvino import cpu_capabilities

    return cpu_capabilities()


def cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


NO_OPENVINO = pytest.mark.skipif(not openvino_caps(), reason="openvino is not installed")
NO_OV_BF16 = pytest.mark.skipif("BF16" not in openvino_caps(), reason="this CPU has no native bf16 for OpenVINO")


@pytest.fixture(params=["teacher", "student"])
def bundle(request, tiny_bundle, tiny_student_bundle):
    return tiny_bundle if request.param == "teacher" else tiny_student_bundle


def check_contract(bundle, settings, row_tol):
    """Contract tests every backend passes: shapes and dtype, rows independent of their batch
    neighbours, masked-out text ignored, and a student's guidance input used."""
    m = load_manifest(bundle)
    den = make_denoiser(bundle, m, settings.model_copy(update={"max_batch": 6}))
    assert isinstance(den, Denoiser)
    assert den.max_batch <= 6
    z, t, s, mask, *w = denoiser_inputs(m, 5, seed=3)
    w = w[0] if w else None
    out = den(z, t, s, mask, w)
    assert out.shape == z.shape and out.dtype == np.float32 and np.isfinite(out).all()
    # Rows do not depend on their batch neighbours (what lets the service batch requests freely).
    alone = den(z[2:3], t[2:3], s[2:3], mask[2:3], None if w is None else w[2:3])
    np.testing.assert_allclose(alone[0], out[2], atol=row_tol)
    # The text mask matters: masked-out token states must not change the output.
    s2 = s.copy()
    s2[mask == 0] = 100.0
    np.testing.assert_allclose(den(z, t, s2, mask, w), out, atol=max(row_tol, 1e-5))
    if m.guidance.network_input:
        assert not np.allclose(den(z, t, s, mask, w + 1.0), out, atol=1e-4)
