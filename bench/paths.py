"""The denoiser paths a benchmark compares: backend x precision x compilation, built from a bundle.

Native paths go through `service.loader.make_denoiser` (what the service runs). Two ONNX Runtime
reduced-precision paths are built here from the bundle's fp32 graph, because the service serves
fp32 graphs only (`make_denoiser` refuses others) and a path has to pay before it joins it:
- `onnxruntime-int8`: static QDQ quantisation (`onnxruntime.quantization.quantize_static`,
  per-channel int8 weights, uint8 activations, Conv/MatMul/Gemm), calibrated on the denoiser's
  real inputs along sampler trajectories (shapes-world captions, every step, both guidance halves);
- `onnxruntime-fp16`: the graph converted to fp16 with fp32 inputs and outputs
  (`onnxruntime.transformers.float16`);
- `onnxruntime-fp32-legacy`: the bundle's torch weights exported with the *previous* export recipe
  (`distill.export.recipe.LEGACY`: decomposed attention, opset 20), so the old graph and the new
  one run side by side from one bundle (needs torch: the distill extra).
OpenVINO paths (`openvino-fp32`, `openvino-bf16`) are native: the service serves them.
Derived graphs are cached beside the bundles (`<bundles>/.cache/bench/`), keyed by the fp32
graph's sha256.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fewstep.bundle import Manifest, step_schedules
from service.backends.base import BackendError, BackendSettings, Denoiser

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchPath:
    name: str
    backend: str
    precision: str
    compile: bool = False
    legacy_graph: bool = False

    @property
    def native(self) -> bool:
        """Served by `service.loader.make_denoiser` as it stands."""
        return not (self.backend == "onnxruntime" and (self.precision != "fp32" or self.legacy_graph))


PATHS: dict[str, BenchPath] = {
    p.name: p
    for p in (
        BenchPath("onnxruntime-fp32", "onnxruntime", "fp32"),
        BenchPath("onnxruntime-int8", "onnxruntime", "int8"),
        BenchPath("onnxruntime-fp16", "onnxruntime", "fp16"),
        BenchPath("onnxruntime-fp32-legacy", "onnxruntime", "fp32", legacy_graph=True),
        BenchPath("openvino-fp32", "openvino", "fp32"),
        BenchPath("openvino-bf16", "openvino", "bf16"),
        BenchPath("torch-fp32", "torch", "fp32"),
        BenchPath("torch-bf16", "torch", "bf16"),
        BenchPath("torch-compile-fp32", "torch", "fp32", compile=True),
        BenchPath("torch-compile-bf16", "torch", "bf16", compile=True),
    )
}
DEFAULT_PATHS = (
    "onnxruntime-fp32",
    "onnxruntime-int8",
    "openvino-fp32",
    "openvino-bf16",
    "torch-fp32",
    "torch-bf16",
    "torch-compile-fp32",
    "torch-compile-bf16",
)
CALIBRATION_SEED = 4242  # shapes.sample seed of the calibration captions (not the evaluation's)


def find_path(backend: str, precision: str, compile: bool = False) -> BenchPath:
    for p in PATHS.values():
        if (p.backend, p.precision, p.compile, p.legacy_graph) == (backend, precision, compile, False):
            return p
    raise BackendError(f"no benchmark path for backend {backend} at {precision}{' compiled' if compile else ''}")


def bundle_prompts(bundle: Path, manifest: Manifest, cache_size: int = 4096):
    """The bundle's tokenizer and text encoder (ONNX Runtime, CPU) behind the service's prompt cache."""
    from service.backends.onnxruntime import OrtTextEncoder
    from service.text import BundleTokenizer, PromptEncoder

    spec = manifest.graphs["text_encoder"]
    text = OrtTextEncoder(bundle / spec.file, spec, BackendSettings(kind="onnxruntime", precision="fp32"))
    tokenizer = BundleTokenizer(bundle / manifest.text.tokenizer_files[0], manifest.text.max_tokens)
    return PromptEncoder(tokenizer, text, cache_size=cache_size)


def with_steps(manifest: Manifest, steps: Sequence[int]) -> Manifest:
    """The manifest with step plans added for step counts it lacks (benchmarks only: K = 4 on a
    teacher bundle); the plans come from the same `fewstep.schedule` maths the exporter uses."""
    extra = sorted(set(steps) - set(manifest.steps))
    if not extra:
        return manifest
    return manifest.model_copy(update={"steps": {**manifest.steps, **step_schedules(extra)}})


def calibration_captions(n: int) -> list[str]:
    import shapesworld as shapes

    return [shapes.sample(CALIBRATION_SEED, i).caption for i in range(n)]


class _Recorder:
    """Wraps a denoiser and keeps every input batch it sees (calibration data)."""

    def __init__(self, inner: Denoiser) -> None:
        self.inner = inner
        self.max_batch = inner.max_batch
        self.batches: list[tuple[np.ndarray, ...]] = []

    def __call__(self, z, t, states, mask, w=None, d=None):
        self.batches.append(tuple(np.array(a) for a in (z, t, states, mask, w, d) if a is not None))
        return self.inner(z, t, states, mask, w) if d is None else self.inner(z, t, states, mask, w, d)


def calibration_batches(
    bundle: Path, manifest: Manifest, prompts, n_images: int = 16, steps: int = 8, chunk: int = 32
) -> list[dict[str, np.ndarray]]:
    """Denoiser inputs along real sampler trajectories of the fp32 graph, as ORT feed dicts."""
    from service.backends.onnxruntime import OrtDenoiser
    from service.pipeline import ImageJob, Pipeline

    spec = manifest.graphs["denoiser"]
    rec = _Recorder(OrtDenoiser(bundle / spec.file, spec, BackendSettings(kind="onnxruntime", precision="fp32")))
    m = with_steps(manifest, [steps])
    jobs = [ImageJob(c, 10_000 + i, steps, m.guidance.default) for i, c in enumerate(calibration_captions(n_images))]
    Pipeline(m, prompts, rec, "calibration").sample(jobs, steps)
    names = [i.name for i in spec.inputs]
    feeds = []
    for arrays in rec.batches:
        for i in range(0, arrays[0].shape[0], chunk):
            feeds.append({n: a[i : i + chunk] for n, a in zip(names, arrays, strict=True)})
    return feeds


def _cache_dir(bundle: Path) -> Path:
    d = bundle.parent / ".cache" / "bench"
    d.mkdir(parents=True, exist_ok=True)
    return d


def int8_graph(bundle: Path, manifest: Manifest, prompts=None) -> Path:
    """The denoiser graph with static QDQ int8 quantisation (built once, cached by graph hash)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    spec = manifest.graphs["denoiser"]
    out = _cache_dir(bundle) / f"{manifest.files[spec.file][:16]}-int8.onnx"
    if out.is_file():
        return out
    feeds = calibration_batches(bundle, manifest, prompts or bundle_prompts(bundle, manifest))

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(feeds)

        def get_next(self):
            return next(self.it, None)

    pre = out.with_suffix(".pre.onnx")
    tmp = out.with_suffix(".tmp.onnx")
    log.info("quantising %s to int8 (static QDQ, %d calibration batches)", spec.file, len(feeds))
    quant_pre_process(str(bundle / spec.file), str(pre), skip_symbolic_shape=True)
    quantize_static(
        str(pre),
        str(tmp),
        Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["Conv", "MatMul", "Gemm"],
    )
    tmp.rename(out)
    pre.unlink(missing_ok=True)
    return out


def fp16_graph(bundle: Path, manifest: Manifest) -> Path:
    """The denoiser graph converted to fp16 inside, fp32 at its inputs and outputs."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    spec = manifest.graphs["denoiser"]
    out = _cache_dir(bundle) / f"{manifest.files[spec.file][:16]}-fp16.onnx"
    if not out.is_file():
        model = convert_float_to_float16(onnx.load(str(bundle / spec.file)), keep_io_types=True)
        tmp = out.with_suffix(".tmp.onnx")
        onnx.save(model, str(tmp))
        tmp.rename(out)
    return out


def legacy_graph(bundle: Path, manifest: Manifest) -> Path:
    """The bundle's denoiser exported from its torch weights with the legacy recipe (cached)."""
    import json

    from safetensors.torch import load_file

    from distill.export.bundle import DenoiserGraph, export_onnx, onnx_parity
    from distill.export.recipe import LEGACY
    from fewstep.config import UNetConfig
    from fewstep.networks import build_denoiser

    spec = manifest.graphs["denoiser"]
    out = _cache_dir(bundle) / f"{manifest.files['torch/model.safetensors'][:16]}-recipe{LEGACY.key}.onnx"
    if out.is_file():
        return out
    cfg = UNetConfig.model_validate(json.loads((bundle / "torch" / "unet.json").read_text()))
    model = build_denoiser(cfg)
    model.load_state_dict(load_file(bundle / "torch" / "model.safetensors"))
    module = DenoiserGraph(model.eval().requires_grad_(False))
    tmp = out.with_suffix(".tmp.onnx")
    log.info("exporting %s with the legacy recipe for comparison", spec.file)
    export_onnx(module, spec, tmp, recipe=LEGACY)
    onnx_parity(module, spec, tmp)
    tmp.rename(out)
    return out


def make_path_denoiser(
    path: BenchPath, bundle: Path, manifest: Manifest, device: str = "cpu", threads: int | None = None, prompts=None
) -> Denoiser:
    """A `Denoiser` for one benchmark path (native paths exactly as the service builds them)."""
    from service.loader import make_denoiser

    settings = BackendSettings(
        kind=path.backend,
        device=device,
        precision="fp32" if not path.native else path.precision,
        threads=threads,
        compile=path.compile,
    )
    if path.native:
        return make_denoiser(bundle, manifest, settings)
    from service.backends.onnxruntime import OrtDenoiser

    spec = manifest.graphs["denoiser"]
    if path.legacy_graph:
        graph = legacy_graph(bundle, manifest)
    elif path.precision == "int8":
        graph = int8_graph(bundle, manifest, prompts)
    else:
        graph = fp16_graph(bundle, manifest)
    return OrtDenoiser(graph, spec, settings)
