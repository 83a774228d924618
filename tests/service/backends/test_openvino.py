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
    from service.backends import openvino as backend

    def broken():
        raise RuntimeError("Device with 'CPU' name is not registered in the OpenVINO Runtime")

    monkeypatch.setattr(backend, "shared_core", broken)
    with pytest.raises(BackendError, match=r"openvino cannot use the CPU here: Device with 'CPU'"):
        make_denoiser(tiny_bundle, load_manifest(tiny_bundle), BackendSettings(kind="openvino", precision="fp32"))


SIGNAL_AFTER_FREEING = """
import gc, os, signal, sys
from pathlib import Path
from fewstep.bundle import load_manifest
from service.backends.base import BackendSettings
from service.loader import make_denoiser
bundle = Path(sys.argv[1])
signal.signal(signal.SIGUSR1, lambda *_: print("handled", flush=True))  # CPython: SA_ONSTACK
first, second = (make_denoiser(bundle, load_manifest(bundle), BackendSettings(kind="openvino")) for _ in "ab")
del first
gc.collect()
del second
gc.collect()
os.kill(os.getpid(), signal.SIGUSR1)
"""


@NO_OPENVINO
def test_signals_are_still_handled_after_denoisers_are_freed(tiny_bundle):
    """Two OpenVINO denoisers freed in the order they were made, then a signal with a Python
    handler: it must run. With a `Core` per denoiser, each CPU plugin swapped the thread's signal
    stack for its own and the second put back the first's freed one, so the signal killed the
    process with SIGSEGV (CI's crash of the test process at its next SIGCHLD; a served process
    would crash the same way at `docker stop`). `shared_core` keeps one plugin for the process."""
    import subprocess
    import sys
    from pathlib import Path

    done = subprocess.run(
        [sys.executable, "-c", SIGNAL_AFTER_FREEING, str(tiny_bundle)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert done.returncode == 0 and "handled" in done.stdout, (done.returncode, done.stderr[-2000:])
