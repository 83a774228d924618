"""OpenVINO backend (CPU): the bundle's ONNX denoiser graph, in fp32 or bf16, without torch.

OpenVINO reads the ONNX graph directly (no conversion step, nothing written beside the bundle) and
compiles it for this CPU: GroupNorm runs as one MVN kernel, the ONNX `Attention` op of export
recipe 2 as one kernel, and with `INFERENCE_PRECISION_HINT=bf16` the convolutions and matrix
products run on AVX-512 BF16 / AMX where the CPU has them, while OpenVINO keeps normalisations and
softmax in fp32. That is the bf16 path the ONNX Runtime CPU provider lacks (BENCHMARKS.md: its
fp32 convolutions already sit at the fp32 FMA limit of these cores).

Precision is an explicit hint, never OpenVINO's own default (which is bf16 on AMX CPUs): "fp32"
asks for f32 inference, "bf16" for bf16 and is refused on a CPU without native bf16 (OpenVINO
would silently run f32 and the figures would lie about the path). The session uses the latency
hint with one stream (the service runs one batch at a time) and `threads` inference threads.
"""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

import numpy as np

from fewstep.bundle import STEP_SIZE_INPUT, GraphSpec
from service.backends.base import BackendError, BackendSettings, network_inputs

log = logging.getLogger(__name__)

HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16"}
_NP = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def shared_core():
    """The process's one OpenVINO `Core`, kept for the life of the process.

    Why one, and never freed: each `Core` loads its own instance of the CPU plugin, and the plugin
    (OpenVINO 2026.4) swaps the loading thread's signal stack (`sigaltstack`) for one it allocates,
    putting back the one it found when it unloads. Two plugins unloaded in the order they loaded
    leave that thread on the first plugin's freed stack; the next signal whose handler runs on the
    signal stack (every Python handler: SIGINT, SIGTERM from `docker stop`, torch's SIGCHLD)
    then kills the process with SIGSEGV instead of running the handler. That was CI's segfault of
    the test process (tests/service/backends/test_openvino.py reproduces it). One plugin that
    outlives every compiled model is never unloaded, so the stack it installed stays valid. OpenVINO
    documents `Core` as safe to share between threads, and compiling through one `Core` also shares
    the plugin's thread pools instead of building one per model.
    """
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> set[str]:
    """OpenVINO's CPU plugin capabilities (e.g. {'FP32', 'BF16', 'INT8'}); empty without openvino."""
    if not openvino_available():
        return set()
    return {str(c).upper() for c in shared_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")}


class OpenVinoDenoiser:
    """One compiled model and one infer request, called from the engine's single runner thread."""

    def __init__(self, graph: Path, spec: GraphSpec, settings: BackendSettings) -> None:
        if not openvino_available():
            raise BackendError("backend 'openvino' needs the openvino package (pip install openvino)")
        if settings.device != "cpu":
            raise BackendError(f"backend 'openvino' runs on the CPU here, not device {settings.device!r}")
        precision = settings.precision
        if precision not in HINTS:
            raise BackendError(f"backend 'openvino' runs fp32, bf16 or fp16, not {precision}")
        try:  # a runtime without its CPU plugin (a trimmed install) fails here: `auto` skips the path
            core = shared_core()
            caps = {str(c).upper() for c in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")}
        except Exception as e:  # openvino raises RuntimeError subclasses of its own
            raise BackendError(f"openvino cannot use the CPU here: {e}") from None
        wanted = {"bf16": "BF16", "fp16": "FP16"}.get(precision)
        if wanted and wanted not in caps:
            raise BackendError(
                f"backend 'openvino' at {precision}: this CPU has no native {precision} "
                f"(OpenVINO capabilities: {sorted(caps)})"
            )
        config = {
            "INFERENCE_PRECISION_HINT": HINTS[precision],
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": "1",
            "INFERENCE_NUM_THREADS": str(settings.threads or (os.cpu_count() or 1)),
        }
        try:
            self.compiled = core.compile_model(core.read_model(str(graph)), "CPU", config)
        except Exception as e:  # openvino raises RuntimeError subclasses of its own
            raise BackendError(f"openvino could not compile {graph}: {e}") from None
        self.request = self.compiled.create_infer_request()
        self.output = self.compiled.output(0)
        self.names = [i.name for i in spec.inputs]
        self.dtypes = [_NP[i.dtype] for i in spec.inputs]
        self.takes_w = "w" in self.names
        self.takes_d = STEP_SIZE_INPUT in self.names
        self.max_batch = min(settings.max_batch, spec.max_batch)
        self.precision = precision
        log.info(
            "openvino %s on %s (hint %s, %s threads)",
            graph.name,
            core.get_property("CPU", "FULL_DEVICE_NAME"),
            HINTS[precision],
            config["INFERENCE_NUM_THREADS"],
        )

    def __call__(self, z, t, states, mask, w=None, d=None) -> np.ndarray:
        arrays = network_inputs(z, t, states, mask, w, d, self.takes_w, self.takes_d)
        feeds = {n: np.ascontiguousarray(a, dtype=d) for n, a, d in zip(self.names, arrays, self.dtypes, strict=True)}
        # infer() copies the outputs out of the request's buffers (share_outputs=False), so the
        # array stays valid after the next call.
        return np.asarray(self.request.infer(feeds)[self.output], dtype=np.float32)
