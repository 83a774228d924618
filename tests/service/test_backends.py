"""Contract tests every backend passes, and parity of the ONNX graphs against torch."""

import numpy as np
import pytest

from fewstep.bundle import load_manifest
from service.backends.base import BackendError, BackendSettings, Denoiser
from service.backends.fake import FakeDenoiser
from service.loader import denoiser_inputs, make_denoiser


def _ort_providers():
    import onnxruntime as ort

    return ort.get_available_providers()


def _openvino_caps() -> set[str]:
    from service.backends.openvino import cpu_capabilities

    return cpu_capabilities()


_NO_OPENVINO = pytest.mark.skipif(not _openvino_caps(), reason="openvino is not installed")
_NO_OV_BF16 = pytest.mark.skipif("BF16" not in _openvino_caps(), reason="this CPU has no native bf16 for OpenVINO")


def _cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


BACKENDS = [
    pytest.param(BackendSettings(kind="onnxruntime"), 1e-5, id="onnxruntime-cpu"),
    pytest.param(BackendSettings(kind="torch", precision="fp32"), 1e-5, id="torch-cpu-fp32"),
    pytest.param(BackendSettings(kind="torch", precision="bf16"), 5e-2, id="torch-cpu-bf16"),
    pytest.param(BackendSettings(kind="openvino", precision="fp32"), 1e-5, id="openvino-cpu-fp32", marks=_NO_OPENVINO),
    pytest.param(
        BackendSettings(kind="openvino", precision="bf16"),
        5e-2,
        id="openvino-cpu-bf16",
        marks=[_NO_OPENVINO, _NO_OV_BF16],
    ),
    pytest.param(
        BackendSettings(kind="onnxruntime", device="cuda"),
        1e-4,
        id="onnxruntime-cuda",
        marks=[
            pytest.mark.gpu,
            pytest.mark.skipif(
                "CUDAExecutionProvider" not in _ort_providers(), reason="no onnxruntime CUDA provider (CPU build)"
            ),
        ],
    ),
    pytest.param(
        BackendSettings(kind="torch", device="cuda"),
        1e-4,
        id="torch-cuda",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="CUDA is not available")],
    ),
    pytest.param(
        BackendSettings(kind="tensorrt", device="cuda", precision="fp16"),
        2e-2,
        id="tensorrt",
        marks=[pytest.mark.gpu, pytest.mark.skipif(not _cuda(), reason="TensorRT needs an NVIDIA GPU")],
    ),
]


@pytest.fixture(params=["teacher", "student"])
def bundle(request, tiny_bundle, tiny_student_bundle):
    return tiny_bundle if request.param == "teacher" else tiny_student_bundle


@pytest.mark.parametrize(("settings", "row_tol"), BACKENDS)
def test_backend_contract(bundle, settings, row_tol):
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


def test_fake_backend_meets_the_contract():
    den = FakeDenoiser(max_batch=4)
    assert isinstance(den, Denoiser)
    with pytest.raises(ValueError, match="max_batch"):
        den(*(np.zeros((5, *shape), np.float32) for shape in ((3, 8, 8), (), (8, 4), (8,))))


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


@pytest.mark.parametrize(
    ("precision", "tol"),
    [pytest.param("fp32", 1e-4, marks=_NO_OPENVINO), pytest.param("bf16", 0.1, marks=[_NO_OPENVINO, _NO_OV_BF16])],
)
@pytest.mark.parametrize("which", ["teacher", "student"])
def test_openvino_matches_onnxruntime_fp32(which, precision, tol, tiny_bundle, tiny_student_bundle):
    """Same graph, two runtimes: tight in f32; in bf16 within a loose bound (the evaluator's figures,
    `fewstep bench quality --backend openvino`, decide whether bf16 may serve)."""
    bundle = tiny_bundle if which == "teacher" else tiny_student_bundle
    m = load_manifest(bundle)
    ort = make_denoiser(bundle, m, BackendSettings(kind="onnxruntime"))
    ov = make_denoiser(bundle, m, BackendSettings(kind="openvino", precision=precision))
    diffs = []
    for b in (1, 3, 8):
        args = denoiser_inputs(m, b, seed=10 + b)
        w = args[4] if len(args) > 4 else None
        ref, got = ort(*args[:4], w), ov(*args[:4], w)
        assert got.shape == ref.shape and got.dtype == np.float32
        diffs.append(float(np.abs(got - ref).max()))
    assert max(diffs) <= tol
    if precision == "bf16":
        assert max(diffs) > 1e-6  # the hint took effect: bf16 is not bit-equal to f32


def test_unsupported_choices_are_clear_errors(tiny_bundle):
    m = load_manifest(tiny_bundle)
    with pytest.raises(BackendError, match="onnxruntime serves fp32"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="onnxruntime", precision="int8"))
    if "CUDAExecutionProvider" not in _ort_providers():
        with pytest.raises(BackendError, match="CUDAExecutionProvider"):
            make_denoiser(tiny_bundle, m, BackendSettings(kind="onnxruntime", device="cuda"))
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(BackendError, match="tensorrt"):
            make_denoiser(tiny_bundle, m, BackendSettings(kind="tensorrt", device="cuda"))
    with pytest.raises(BackendError, match=r"openvino.*runs on the CPU"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="openvino", device="cuda", precision="fp32"))
    with pytest.raises(BackendError, match=r"openvino.*not int8"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="openvino", precision="int8"))
