"""ONNX Runtime backend: CPU, CUDA (with IO binding) and TensorRT execution providers.

Session options are set for this workload rather than left at defaults: all graph optimisations
(constant folding, conv/GroupNorm/attention fusions), sequential execution (the graphs are
chains; inter-op parallelism only oversubscribes the cores), an explicit intra-op thread count,
and no spin-waiting between runs (spinning threads steal the cores the HTTP loop and the text
encoder need while a batch is being formed).

The TensorRT provider builds its engines into `engine_cache` (keyed by the provider itself on
graph, GPU and TensorRT version) with the batch profile the manifest declares, so the first start
on a GPU builds and every later start loads; an engine is never built inside a request because
the loader warms every session before the service reports ready.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fewstep.bundle import STEP_SIZE_INPUT, GraphSpec
from service.backends.base import BackendError, BackendSettings, network_inputs

log = logging.getLogger(__name__)

_NP = {"float32": np.float32, "float16": np.float16, "int64": np.int64, "int32": np.int32}


def _providers(settings: BackendSettings, spec: GraphSpec, graph: Path) -> list:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if settings.device == "cpu":
        return ["CPUExecutionProvider"]
    wanted = "TensorrtExecutionProvider" if settings.kind == "tensorrt" else "CUDAExecutionProvider"
    if wanted not in available:
        raise BackendError(
            f"onnxruntime has no {wanted} here (available: {available}); install onnxruntime-gpu for device=cuda"
        )
    cuda = ("CUDAExecutionProvider", {"device_id": 0, "cudnn_conv_algo_search": "EXHAUSTIVE"})
    if wanted == "CUDAExecutionProvider":
        return [cuda, "CPUExecutionProvider"]
    shapes = {
        key: ",".join(f"{i.name}:{'x'.join(str(b if d == 'batch' else d) for d in i.shape)}" for i in spec.inputs)
        for key, b in (("min", spec.min_batch), ("opt", spec.opt_batch), ("max", spec.max_batch))
    }
    trt = {
        "trt_fp16_enable": settings.precision in ("fp16", "auto"),
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(Path(settings.engine_cache) / "ort-trt" / graph.stem),
        "trt_timing_cache_enable": True,
        "trt_profile_min_shapes": shapes["min"],
        "trt_profile_opt_shapes": shapes["opt"],
        "trt_profile_max_shapes": shapes["max"],
    }
    return [("TensorrtExecutionProvider", trt), cuda, "CPUExecutionProvider"]


class OrtGraph:
    """One ONNX graph in an InferenceSession, called with numpy arrays in declaration order."""

    def __init__(self, graph: Path, spec: GraphSpec, settings: BackendSettings) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.intra_op_num_threads = settings.threads or (os.cpu_count() or 1)
        so.inter_op_num_threads = 1
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self.spec = spec
        self.max_batch = min(settings.max_batch, spec.max_batch)
        try:
            self.session = ort.InferenceSession(str(graph), so, providers=_providers(settings, spec, graph))
        except BackendError:
            raise
        except Exception as e:  # onnxruntime raises its own Fail/InvalidGraph types
            raise BackendError(f"onnxruntime could not load {graph}: {e}") from None
        self.providers = self.session.get_providers()
        self.names = [i.name for i in spec.inputs]
        self.dtypes = [_NP[i.dtype] for i in spec.inputs]
        self.output = spec.outputs[0].name
        self.on_gpu = self.providers[0] != "CPUExecutionProvider"

    def run(self, *arrays: np.ndarray) -> np.ndarray:
        feeds = {n: np.ascontiguousarray(a, dtype=d) for n, a, d in zip(self.names, arrays, self.dtypes, strict=True)}
        if not self.on_gpu:
            return self.session.run([self.output], feeds)[0]
        # IO binding: inputs copied once to the device, the output allocated there by the provider.
        binding = self.session.io_binding()
        for name, value in feeds.items():
            binding.bind_cpu_input(name, value)
        binding.bind_output(self.output, "cuda")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]


class OrtDenoiser:
    def __init__(self, graph: Path, spec: GraphSpec, settings: BackendSettings) -> None:
        self.graph = OrtGraph(graph, spec, settings)
        self.max_batch = self.graph.max_batch
        self.takes_w = "w" in self.graph.names
        self.takes_d = STEP_SIZE_INPUT in self.graph.names

    def __call__(self, z, t, states, mask, w=None, d=None) -> np.ndarray:
        return self.graph.run(*network_inputs(z, t, states, mask, w, d, self.takes_w, self.takes_d))


class OrtTextEncoder:
    def __init__(self, graph: Path, spec: GraphSpec, settings: BackendSettings) -> None:
        self.graph = OrtGraph(graph, spec, settings)
        self.max_batch = self.graph.max_batch

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        from service.backends.base import chunked

        return chunked(self.graph.run, self.max_batch, input_ids, attention_mask)
