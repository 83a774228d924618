"""The ONNX Runtime backend (service.backends.onnxruntime): the contract, and parity with torch."""

import numpy as np
import pytest

from fewstep.bundle import load_manifest
from service.backends.base import BackendError, BackendSettings
from service.loader import denoiser_inputs, make_denoiser
from tests.service.backends.conftest import check_contract, ort_providers


@pytest.mark.parametrize(
    ("settings", "row_tol"),
    [
        pytest.param(BackendSettings(kind="onnxruntime"), 1e-5, id="onnxruntime-cpu"),
        pytest.param(
            BackendSettings(kind="onnxruntime", device="cuda"),
            1e-4,
            id="onnxruntime-cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(
                    "CUDAExecutionProvider" not in ort_providers(), reason="no onnxruntime CUDA provider (CPU build)"
                ),
            ],
        ),
    ],
)
def test_backend_contract(bundle, settings, row_tol):
    check_contract(bundle, settings, row_tol)


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_onnx_matches_torch_per_step(which, tiny_bundle, tiny_student_bundle):
    bundle = tiny_bundle if which == "teacher" else tiny_student_bundle
    m = load_manifest(bundle)
    ort = make_denoiser(bundle, m, BackendSettings(kind="onnxruntime"))
    pt = make_denoiser(bundle, m, BackendSettings(kind="torch", precision="fp32"))
    for b in (1, 4, 8):
        args = denoiser_inputs(m, b, seed=b)
        a = ort(*args[:4], args[4] if len(args) > 4 else None)
        r = pt(*args[:4], args[4] if len(args) > 4 else None)
        assert np.abs(a - r).max() <= 1e-4


def test_cuda_without_its_provider_is_a_clear_error(tiny_bundle):
    if "CUDAExecutionProvider" in ort_providers():
        pytest.skip("this onnxruntime has the CUDA provider")
    m = load_manifest(tiny_bundle)
    with pytest.raises(BackendError, match="CUDAExecutionProvider"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="onnxruntime", device="cuda"))
