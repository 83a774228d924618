"""Native TensorRT backend: engines built on the target GPU from the bundle's ONNX graph.

The build reads the graph declaration from the manifest (`GraphSpec`: input names, dtypes and the
min/opt/max batch of its one optimisation profile), so export and engine cannot disagree.
Engines go into a cache keyed by GPU model, TensorRT version, graph sha256 and precision: a
deployment builds once (`deploy/entrypoint.sh` at first start, or `fewstep build-engines`) and
every later start deserialises. `TensorRTDenoiser` never builds inside a request: it builds or
loads in its constructor, which the loader runs before the service reports ready.

Device memory is handled with `cuda-python` (cuda.bindings), which the GPU runtime image ships
with TensorRT, so serving needs no torch. Not verified on this CPU-only machine: the tests in
`tests/service/backends/test_tensorrt.py` run it where TensorRT and a GPU exist and skip otherwise.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from fewstep.bundle import STEP_SIZE_INPUT, GraphSpec, sha256_file
from service.backends.base import BackendError, BackendSettings, network_inputs

log = logging.getLogger(__name__)


def _import():
    try:
        import tensorrt as trt
    except ImportError:
        raise BackendError("backend 'tensorrt' needs the tensorrt package and an NVIDIA GPU") from None
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python < 12.6
        except ImportError:
            raise BackendError("backend 'tensorrt' needs cuda-python (pip install cuda-python)") from None
    return trt, cudart


def _check(result):
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def engine_path(graph: Path, settings: BackendSettings) -> Path:
    trt, cudart = _import()
    props = _check(cudart.cudaGetDeviceProperties(0))
    gpu = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    key = f"{gpu.replace(' ', '_')}-trt{trt.__version__}-{sha256_file(graph)[:16]}-{settings.precision}"
    return Path(settings.engine_cache) / f"{graph.stem}-{key}.engine"


def build_engine(graph: Path, spec: GraphSpec, settings: BackendSettings) -> Path:
    """Build (or find) the engine for `graph` on this GPU; returns its cache path."""
    trt, _ = _import()
    path = engine_path(graph, settings)
    if path.is_file():
        return path
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)  # explicit batch is the only mode in TensorRT >= 10
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(graph)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT could not parse {graph}: {errors}")
    config = builder.create_builder_config()
    if settings.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    elif settings.precision == "bf16":
        config.set_flag(trt.BuilderFlag.BF16)
    profile = builder.create_optimization_profile()
    for i in spec.inputs:

        def dims(b: int, shape=i.shape) -> tuple[int, ...]:
            return tuple(b if d == "batch" else int(d) for d in shape)

        profile.set_shape(i.name, dims(spec.min_batch), dims(spec.opt_batch), dims(spec.max_batch))
    config.add_optimization_profile(profile)
    log.info("building TensorRT engine for %s (%s); minutes, once per GPU", graph.name, settings.precision)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine for {graph}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(path)
    return path


class TensorRTDenoiser:
    """Runs the engine with device buffers sized for `max_batch`, copying numpy in and out."""

    def __init__(self, graph: Path, spec: GraphSpec, settings: BackendSettings) -> None:
        if settings.device != "cuda":
            raise BackendError("backend 'tensorrt' runs on device 'cuda' only")
        trt, cudart = _import()
        self.trt, self.cudart = trt, cudart
        self.spec = spec
        self.max_batch = min(settings.max_batch, spec.max_batch)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(build_engine(graph, spec, settings).read_bytes())
        self.context = self.engine.create_execution_context()
        self.stream = _check(cudart.cudaStreamCreate())
        self.buffers: dict[str, tuple[int, np.dtype, tuple]] = {}
        for t in (*spec.inputs, *spec.outputs):
            dtype = np.dtype(t.dtype)
            shape = tuple(self.max_batch if d == "batch" else int(d) for d in t.shape)
            ptr = _check(cudart.cudaMalloc(int(np.prod(shape)) * dtype.itemsize))
            self.buffers[t.name] = (ptr, dtype, shape)
            self.context.set_tensor_address(t.name, ptr)
        self.takes_w = any(i.name == "w" for i in spec.inputs)
        self.takes_d = any(i.name == STEP_SIZE_INPUT for i in spec.inputs)

    def __call__(self, z, t, states, mask, w=None, d=None) -> np.ndarray:
        cudart = self.cudart
        kind_h2d = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        arrays = network_inputs(z, t, states, mask, w, d, self.takes_w, self.takes_d)
        b = z.shape[0]
        for spec, a in zip(self.spec.inputs, arrays, strict=True):
            ptr, dtype, _ = self.buffers[spec.name]
            a = np.ascontiguousarray(a, dtype=dtype)
            self.context.set_input_shape(spec.name, a.shape)
            _check(cudart.cudaMemcpyAsync(ptr, a.ctypes.data, a.nbytes, kind_h2d, self.stream))
        if not self.context.execute_async_v3(self.stream):
            raise BackendError("TensorRT execution failed")
        out_spec = self.spec.outputs[0]
        ptr, dtype, shape = self.buffers[out_spec.name]
        out = np.empty((b, *shape[1:]), dtype)
        kind_d2h = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart.cudaMemcpyAsync(out.ctypes.data, ptr, out.nbytes, kind_d2h, self.stream))
        _check(cudart.cudaStreamSynchronize(self.stream))
        return out.astype(np.float32, copy=False)

    def __del__(self) -> None:
        for ptr, _, _ in getattr(self, "buffers", {}).values():
            self.cudart.cudaFree(ptr)
