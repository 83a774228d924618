"""The OpenVINO backend (service.backends.openvino): the contract, and parity with ONNX Runtime."""

import numpy as np
import pytest

from fewstep.bundle import load_manifest
from service.backends.base import BackendError, BackendSettings
from service.loader import denoiser_inputs, make_denoiser
from tests.service.backends.conftest import NO_OPENVINO, NO_OV_BF16, check_contract


@pytest.mark.parametrize(
    ("settings", "row_tol"),
    [
        pytest.param(
            BackendSettings(kind="openvino", precision="fp32"), 1e-5, id="openvino-cpu-fp32", marks=NO_OPENVINO
        ),
        pytest.param(
            BackendSettings(kind="openvino", precision="bf16"),
            5e-2,
            id="openvino-cpu-bf16",
            marks=[NO_OPENVINO, NO_OV_BF16],
        ),
    ],
)
def test_backend_contract(bundle, settings, row_tol):
    check_contract(bundle, settings, row_tol)


@pytest.mark.parametrize(
    ("precision", "tol"),
    [pytest.param("fp32", 1e-4, marks=NO_OPENVINO), pytest.param("bf16", 0.1, marks=[NO_OPENVINO, NO_OV_BF16])],
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
    with pytest.raises(BackendError, match=r"openvino.*runs on the CPU"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="openvino", device="cuda", precision="fp32"))
    with pytest.raises(BackendError, match=r"openvino.*not int8"):
        make_denoiser(tiny_bundle, m, BackendSettings(kind="openvino", precision="int8"))


def test_a_runtime_without_its_cpu_plugin_is_a_backend_error_auto_can_skip(tiny_bundle, monkeypatch):
    """The CPU image trims OpenVINO's plugins; if the CPU plugin went missing, `ov.Core()` or its
    property query raises OpenVINO's own RuntimeError. It must surface as a BackendError, which
    `kind=auto` logs and skips, not as a failed start-up."""
    import openvino as ov

    class Broken:
        def __init__(self) -> None:
            raise RuntimeError("Device with 'CPU' name is not registered in the OpenVINO Runtime")

    monkeypatch.setattr(ov, "Core", Broken)
    with pytest.raises(BackendError, match=r"openvino cannot use the CPU here: Device with 'CPU'"):
        make_denoiser(tiny_bundle, load_manifest(tiny_bundle), BackendSettings(kind="openvino", precision="fp32"))
