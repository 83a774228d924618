"""GPU check (`deploy/gpu_check.sh`, `fewstep bench gpu`): CUDA parity against the CPU and sampler timings.

In a few minutes on a lent GPU:
1. parity: the torch denoiser on CUDA (strict fp32: TF32 off) against the CPU on the CPU run's
   own per-step inputs (max abs difference of every network evaluation), and the final uint8
   images of the full k-step sampler for the same seeds;
2. timings of the k-step sampler (classifier-free guidance, two evaluations per image per step)
   at each batch size: torch eager (fp32, bf16, fp16 autocast), `torch.compile` (fp32, bf16) and
   CUDA-graph replay of the whole k-step loop (eager and compiled bf16), whose output is checked
   against the eager `fewstep.sampler` run; then ONNX Runtime's CUDA and TensorRT providers and
   native TensorRT where installed (where not, the table says so and the check goes on);
3. a table printed and written (`gpu_check.md`, `gpu_check.json`) to the output directory.

Needs torch, numpy, safetensors and this repository's `fewstep` (pydantic for its configs);
onnxruntime(-gpu) and tensorrt are optional. No text encoder: token states are random (seeded),
the null prompt is a 2-token mask, which is all timings and parity need. `--model` takes a
bundle (`bundles/teacher`) or a packed model directory (`models/teacher`, committed, so a bare
clone works). `--device cpu` runs the same code on the CPU (a dry run; CUDA-only parts are
reported as skipped).
"""

from __future__ import annotations

import contextlib
import json
import statistics
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

PRECISIONS = ("fp32", "bf16", "fp16")
SECTIONS = ("compile", "graph", "ort", "trt")  # what --skip may name


@dataclass(frozen=True)
class GpuCheckConfig:
    """What the check measures (`fewstep bench gpu`'s flags, one field each)."""

    model: str | None = None  # a bundle or a packed model dir; None: bundles/teacher, else models/teacher
    device: str = "cuda"  # "cpu": a dry run of the same code
    out: str = "."  # directory for gpu_check.md / gpu_check.json
    batches: tuple[int, ...] = (1, 16, 64)
    steps: tuple[int, ...] = (4, 8)
    guidance: float = 3.0
    repeats: int = 10
    budget_s: float = 210.0  # a section that would start after this many seconds is skipped
    skip: tuple[str, ...] = ()  # of SECTIONS
    precisions: tuple[str, ...] = PRECISIONS  # torch precisions timed (eager, compile, graph)

    def model_dir(self) -> str:
        if self.model is not None:
            return self.model
        return next((m for m in ("bundles/teacher", "models/teacher") if Path(m).is_dir()), "models/teacher")


def load_model(path: Path):
    """(cfg, state_dict path, onnx path or None, max_tokens) from a bundle or a packed model dir."""
    from fewstep.config import UNetConfig

    if (path / "torch" / "unet.json").is_file():
        cfg = UNetConfig.model_validate(json.loads((path / "torch" / "unet.json").read_text()))
        manifest = json.loads((path / "manifest.json").read_text())
        onnx = path / manifest["graphs"]["denoiser"]["file"]
        return cfg, path / "torch" / "model.safetensors", onnx, int(manifest["text"]["max_tokens"])
    if (path / "config.json").is_file() and (path / "model.safetensors").is_file():
        conf = json.loads((path / "config.json").read_text())["config"]
        cfg = UNetConfig.model_validate(conf["model"])
        onnx = path / "denoiser.onnx"
        return cfg, path / "model.safetensors", onnx if onnx.is_file() else None, int(conf["text"]["max_tokens"])
    raise FileNotFoundError(f"--model: {path} is neither a bundle nor a packed model directory")


def build(cfg, weights: Path, device: str):
    import torch
    from safetensors.torch import load_file

    from fewstep.networks import build_denoiser

    model = build_denoiser(cfg)
    model.load_state_dict(load_file(weights))
    model = model.to(device).eval().requires_grad_(False)
    if device == "cpu":
        model = model.to(memory_format=torch.channels_last)
    return model


class Cond:
    """Random token states for `batch` prompts plus the null prompt, numpy and on a device."""

    def __init__(self, batch: int, tokens: int, dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        lengths = rng.integers(4, tokens + 1, batch)
        self.states = (0.5 * rng.standard_normal((batch, tokens, dim))).astype(np.float32)
        self.mask = (np.arange(tokens)[None] < lengths[:, None]).astype(np.int64)
        self.states *= self.mask[..., None]
        self.null_states = np.zeros_like(self.states)
        self.null_mask = np.zeros_like(self.mask)
        self.null_mask[:, :2] = 1
        self.null_states[:, :2] = 0.5 * rng.standard_normal((2, dim)).astype(np.float32)

    def numpy(self) -> tuple[np.ndarray, np.ndarray]:
        """The doubled batch's text: (states, mask) of the prompts, then of the null prompt."""
        return np.concatenate([self.states, self.null_states]), np.concatenate([self.mask, self.null_mask])

    def torch(self, device: str):
        import torch

        s, m = self.numpy()
        return torch.from_numpy(s).to(device), torch.from_numpy(m).to(device).bool()

    def halves(self, device: str | None = None) -> tuple[tuple, tuple]:
        """((states, mask), (null_states, null_mask)) for `guided`: numpy, or torch on `device`."""
        if device is None:
            return (self.states, self.mask), (self.null_states, self.null_mask)
        import torch

        def put(s: np.ndarray, m: np.ndarray) -> tuple:
            return torch.from_numpy(s).to(device), torch.from_numpy(m).to(device).bool()

        return put(self.states, self.mask), put(self.null_states, self.null_mask)


def guided(call: Callable, text: tuple, null: tuple, w: float) -> Callable:
    """denoise(z, t, cond, w) for the samplers: one doubled batch (conditional + null) per step,
    `fewstep.guidance.doubled_guidance` around `call(z2, t2, states2, mask2)` (numpy or torch;
    a torch call's output is taken in fp32, as autocast may return bf16 or fp16)."""
    from fewstep.guidance import doubled_guidance

    def denoise(z, t, _cond, _w):
        run = call if isinstance(z, np.ndarray) else lambda *inputs: call(*inputs).float()
        return doubled_guidance(run, z, t, text, null, w)

    return denoise


def torch_call(model, dtype=None) -> Callable:
    """The network under autocast at `dtype` (None: fp32). Autocast's weight-cast cache is off:
    a cached cast made while a CUDA graph is captured would be freed under the graph."""
    import torch

    device = next(model.parameters()).device.type

    def call(z, t, states, mask):
        ctx = (
            torch.autocast(device, dtype=dtype, cache_enabled=False) if dtype is not None else contextlib.nullcontext()
        )
        with ctx:
            return model(z, t, states, mask)

    return call


def sample_torch(call: Callable, cond: Cond, steps: int, device: str, w: float, seeds: list[int], shape):
    """The service's k-step loop (`fewstep.sampler.ancestral_sample`, seeded host noise) on torch."""
    import torch

    from fewstep.rng import SeededNoise
    from fewstep.sampler import ancestral_sample

    like = torch.zeros(1, device=device)
    with torch.inference_mode():
        return ancestral_sample(guided(call, *cond.halves(device), w), steps, None, w, SeededNoise(seeds, shape), like)


class GraphedSampler:
    """The whole k-step loop captured once in a CUDA graph and replayed.

    The loop is `fewstep.sampler`'s maths (`step_update`, `doubled_guidance` via `guided`)
    with its host-side pieces moved out of the graph: the t vectors and every step's noise sit in
    static device tensors (filled from the same seeded noise), coefficients are Python floats.
    `run()` replays; its output is checked against `sample_torch`."""

    def __init__(self, call: Callable, cond: Cond, steps: int, w: float, seeds: list[int], shape) -> None:
        import torch

        from fewstep.rng import SeededNoise
        from fewstep.sampler import StepCoefficients, step_update
        from fewstep.schedule import step_plan

        dev = "cuda"
        plan = step_plan(steps)
        noise = SeededNoise(seeds, shape)
        b = len(seeds)
        self.z0 = torch.from_numpy(noise.initial()).to(dev)
        self.eps = [torch.from_numpy(noise.step(j)).to(dev) for j in range(steps - 1)]
        self.t = [torch.full((b,), float(np.float32(plan.t[i])), device=dev) for i in range(steps)]
        # The graph reads its inputs at the addresses captured: every static tensor (the text
        # states and masks too) must outlive the graph, so they are held here. (On the H200 the
        # first run freed them with the constructor's locals; the replay then read reused memory:
        # max |graph - eager| ~2 at batch 1-16, exact where nothing reused it.)
        self.text, self.null = cond.halves(dev)
        denoise = guided(call, self.text, self.null, w)

        def loop():
            z = self.z0
            x = z
            for i in range(plan.steps):
                x = denoise(z, self.t[i], None, w)
                if i < plan.steps - 1:
                    z = step_update("ancestral", z, x, StepCoefficients.at(plan, i), self.eps[i])
            return x

        with torch.inference_mode():
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(2):
                    loop()
            torch.cuda.current_stream().wait_stream(stream)
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):
                self.out = loop()

    def run(self):
        self.graph.replay()
        return self.out


def timeit(fn: Callable, device: str, repeats: int, warmup: int = 2) -> list[float]:
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return times


def to_uint8(x) -> np.ndarray:
    from fewstep.images import to_uint8 as u8

    return u8(x.float().cpu().numpy() if hasattr(x, "cpu") else x)


def parity(cfg, weights: Path, device: str, tokens: int, steps: int, w: float, batch: int = 4) -> dict[str, Any]:
    """Per-step network outputs and final images, `device` against the CPU (strict fp32)."""
    import torch

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    cpu, dev = build(cfg, weights, "cpu"), build(cfg, weights, device)
    cond = Cond(batch, tokens, cfg.text_dim)
    shape = (cfg.in_channels, cfg.resolution, cfg.resolution)
    seeds = list(range(batch))
    record: list[tuple] = []
    cpu_call = torch_call(cpu)

    def recording(z, t, s, m):
        x = cpu_call(z, t, s, m)
        record.append((z.clone(), t.clone(), x.clone()))
        return x

    x_cpu = sample_torch(recording, cond, steps, "cpu", w, seeds, shape)
    s_dev, m_dev = cond.torch(device)
    per_step = []
    with torch.inference_mode():
        for z, t, x in record:
            y = dev(z.to(device), t.to(device), s_dev, m_dev).float().cpu()
            per_step.append(float((y - x).abs().max()))
    x_dev = sample_torch(torch_call(dev), cond, steps, device, w, seeds, shape)
    img_diff = np.abs(to_uint8(x_dev).astype(int) - to_uint8(x_cpu).astype(int))
    torch.backends.cudnn.allow_tf32 = True  # back to torch's defaults for the timings
    return {
        "batch": batch,
        "steps": steps,
        "per_step_max_abs": per_step,
        "denoiser_max_abs": max(per_step),
        "final_x_max_abs": float((x_dev.float().cpu() - x_cpu).abs().max()),
        "image_max_abs_255": int(img_diff.max()),
        "pass": max(per_step) <= 1e-4 and int(img_diff.max()) <= 2,
        "criteria": "denoiser <= 1e-4, images <= 2/255 (TF32 off)",
    }


class GpuRun:
    """One run of the check: its config, the network, the inputs every section times (random text
    per batch size, seeds 0..b-1), and the document it fills, written to `out` after every section
    (a later section may hang or be killed by the timeout)."""

    def __init__(self, cfg: GpuCheckConfig, model: str, started: float, header: dict[str, Any]) -> None:
        self.cfg, self.out, self.started = cfg, Path(cfg.out), started
        self.net, self.weights, self.onnx_path, self.tokens = load_model(Path(model))  # net: the UNetConfig
        self.shape = (self.net.in_channels, self.net.resolution, self.net.resolution)
        self.conds = {b: Cond(b, self.tokens, self.net.text_dim, seed=b) for b in cfg.batches}
        self.seeds = {b: list(range(b)) for b in cfg.batches}
        self.flops = 0.0  # per image per network evaluation, set by `count_flops_and_peaks`
        from fewstep.provenance import provenance  # `unknown` on a device given the files without the repository

        self.doc: dict[str, Any] = {"model": model, **header, **provenance(), "rows": [], "notes": []}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def note(self, msg: str) -> None:
        print(msg, flush=True)
        self.doc["notes"].append(msg)

    def add(self, mode: str, precision: str, batch: int, steps: int, times: list[float] | None, extra: str = ""):
        row = {"mode": mode, "precision": precision, "batch": batch, "steps": steps, "note": extra}
        if times:
            med = statistics.median(times)
            row |= {"median_ms": 1000 * med, "images_per_s": batch / med, "repeats": len(times)}
            row["tflops"] = row["images_per_s"] * 2 * steps * self.flops / 1e12
        self.doc["rows"].append(row)
        ips = f"{row['images_per_s']:9.1f} img/s" if times else "        -      "
        print(f"  {mode:28s} {precision:5s} b={batch:3d} K={steps}: {ips} {extra}", flush=True)

    def flush(self) -> str:
        """Write what has been measured so far; the markdown table."""
        self.doc["elapsed_s"] = self.elapsed()
        (self.out / "gpu_check.json").write_text(json.dumps(self.doc, indent=2) + "\n")
        md = table(self.doc)
        (self.out / "gpu_check.md").write_text(md)
        return md

    def budget_left(self, what: str) -> bool:
        self.flush()
        if self.elapsed() > self.cfg.budget_s:
            self.note(f"{what}: skipped (time budget of {self.cfg.budget_s:.0f} s spent)")
            return False
        return True

    def sample(self, call: Callable, batch: int, steps: int):
        """The torch k-step loop over this run's inputs at `batch` images."""
        c = self.cfg
        return sample_torch(call, self.conds[batch], steps, c.device, c.guidance, self.seeds[batch], self.shape)

    def time_sampler(self, mode: str, prec: str, call: Callable) -> None:
        for k in self.cfg.steps:
            for b in self.cfg.batches:
                times = timeit(lambda b=b, k=k: self.sample(call, b, k), self.cfg.device, self.cfg.repeats)
                self.add(mode, prec, b, k, times)


def torch_dtypes() -> dict[str, Any]:
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def run_gpu_check(cfg: GpuCheckConfig) -> int:
    """Parity, then every timing section in turn; the table printed and written. 1 (and nothing
    measured) where CUDA was asked for and is not there."""
    started = time.perf_counter()
    import torch

    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    model_dir = cfg.model_dir()
    if cfg.device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: nothing to check (use --device cpu for a dry run)")
        return 1
    header = {
        "device": torch.cuda.get_device_name() if cfg.device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
    }
    run = GpuRun(cfg, model_dir, started, header)
    count_flops_and_peaks(run)
    check_parity(run)
    model = build(run.net, run.weights, cfg.device)
    time_eager(run, model)
    compiled = time_compiled(run, model)
    time_graphs(run, model, compiled)
    time_numpy_backends(run)
    md = run.flush()
    print()
    print(md)
    print(f"wrote {run.out / 'gpu_check.md'} and {run.out / 'gpu_check.json'} ({run.elapsed():.0f} s)")
    return 0


def count_flops_and_peaks(run: GpuRun) -> None:
    """FLOPs per image per evaluation (counted on the CPU model); on CUDA, the matmul peaks too."""
    import torch

    from bench.measure import denoiser_flops, matmul_peak

    net = run.net
    cpu_model = build(net, run.weights, "cpu")
    run.flops = denoiser_flops(cpu_model, 2, net.in_channels, net.resolution, run.tokens, net.text_dim)["per_image"]
    run.doc["flops_per_eval_per_image"] = run.flops
    if run.cfg.device == "cuda":
        peaks = {dt: matmul_peak(dt, 4096, repeats=10, device="cuda") / 1000 for dt in PRECISIONS}
        run.doc["matmul_peak_tflops"] = peaks
        print(f"{run.doc['device']}, torch {torch.__version__}, CUDA {torch.version.cuda}; peaks {peaks}")


def check_parity(run: GpuRun) -> None:
    print("== parity (device vs CPU, fp32, TF32 off)")
    c = run.cfg
    try:
        run.doc["parity"] = parity(run.net, run.weights, c.device, run.tokens, max(c.steps), c.guidance)
        print(f"  {run.doc['parity']}")
    except Exception as e:
        run.doc["parity"] = {"error": repr(e)}
        run.note(f"parity failed: {e!r}")
        traceback.print_exc()


def time_eager(run: GpuRun, model) -> None:
    print("== torch eager (the service's loop: fewstep.sampler, seeded host noise)")
    for prec, dt in torch_dtypes().items():
        if prec in run.cfg.precisions and run.budget_left(f"eager {prec}"):
            run.time_sampler("torch eager", prec, torch_call(model, dt))


def time_compiled(run: GpuRun, model) -> dict[str, Any]:
    """`torch.compile` (dynamic batch) at fp32 and bf16; the compiled models, for the graph section."""
    import torch

    compiled: dict[str, Any] = {}
    if "compile" in run.cfg.skip:
        run.note("torch.compile: skipped (--skip compile)")
        return compiled
    print("== torch.compile (dynamic batch)")
    for prec in ("fp32", "bf16"):
        if prec not in run.cfg.precisions or not run.budget_left(f"torch.compile {prec}"):
            continue
        try:
            t0 = time.perf_counter()
            cm = torch.compile(model, dynamic=True)
            call = torch_call(cm, torch_dtypes()[prec])
            for b in run.cfg.batches:  # compile before timing
                run.sample(call, b, min(run.cfg.steps))
            run.note(f"torch.compile {prec}: compiled and warmed in {time.perf_counter() - t0:.0f} s")
            compiled[prec] = cm
            run.time_sampler("torch.compile", prec, call)
        except Exception as e:
            run.note(f"torch.compile {prec}: failed: {e!r}")
    return compiled


def time_graphs(run: GpuRun, model, compiled: dict[str, Any]) -> None:
    """CUDA-graph replay of the whole k-step loop (eager fp32 and bf16, compiled bf16), each
    checked against the eager loop."""
    if run.cfg.device != "cuda":
        run.note("CUDA-graph replay: skipped (needs CUDA)")
        return
    if "graph" in run.cfg.skip:
        run.note("CUDA-graph replay: skipped (--skip graph)")
        return
    print("== CUDA-graph replay of the whole k-step loop")
    c = run.cfg
    variants = [("graph eager", p, model) for p in ("fp32", "bf16") if p in c.precisions]
    variants += [("graph torch.compile", p, m) for p, m in compiled.items() if p == "bf16"]
    for mode, prec, m in variants:
        if not run.budget_left(f"{mode} {prec}"):
            continue
        for k in c.steps:
            for b in c.batches:
                try:
                    call = torch_call(m, torch_dtypes()[prec])
                    g = GraphedSampler(call, run.conds[b], k, c.guidance, run.seeds[b], run.shape)
                    ref = run.sample(call, b, k)
                    diff = float((g.run().float() - ref.float()).abs().max())
                    run.add(mode, prec, b, k, timeit(g.run, c.device, c.repeats), f"vs eager loop {diff:.1e}")
                except Exception as e:
                    run.add(mode, prec, b, k, None, f"failed: {e!r}"[:160])


def time_numpy_backends(run: GpuRun) -> None:
    """ONNX Runtime CUDA / TensorRT providers and native TensorRT, through the numpy sampler loop."""
    if run.onnx_path is None:
        run.note("ONNX graphs: skipped (no denoiser.onnx next to the model)")
        return
    try:
        import onnxruntime as ort

        available = ort.get_available_providers()
    except ImportError:
        run.note("onnxruntime: not installed, skipped")
        return
    from fewstep.bundle import denoiser_graph

    net = run.net
    spec = denoiser_graph(net.resolution, net.in_channels, run.tokens, net.text_dim, net.guidance_input, max_batch=128)
    print(f"== ONNX Runtime {ort.__version__} (providers: {', '.join(available)})")
    time_ort_providers(run, spec, available)
    time_native_tensorrt(run, spec)


def time_numpy_sampler(run: GpuRun, name: str, prec: str, den) -> None:
    from fewstep.rng import SeededNoise
    from fewstep.sampler import ancestral_sample

    w = run.cfg.guidance
    for k in run.cfg.steps:
        for b in run.cfg.batches:
            halves = run.conds[b].halves()
            fn = lambda b=b, k=k, c=halves: ancestral_sample(  # noqa: E731
                guided(lambda z, t, s, m: den(z, t, s, m), *c, w), k, None, w, SeededNoise(run.seeds[b], run.shape)
            )
            run.add(name, prec, b, k, timeit(fn, "cpu", max(3, run.cfg.repeats // 2)))


def time_ort_providers(run: GpuRun, spec, available: list[str]) -> None:
    from service.backends.base import BackendSettings

    wanted = [("onnxruntime", "CUDAExecutionProvider", "fp32"), ("tensorrt", "TensorrtExecutionProvider", "fp16")]
    if run.cfg.device == "cpu":
        wanted = [("onnxruntime", "CPUExecutionProvider", "fp32")]
    for kind, provider, prec in wanted:
        label = f"ort {provider.removesuffix('ExecutionProvider')}"
        if provider not in available:
            run.note(f"{label}: not available here (install onnxruntime-gpu), skipped")
            continue
        if "ort" in run.cfg.skip or not run.budget_left(label):
            continue
        try:
            from service.backends.onnxruntime import OrtDenoiser

            settings = BackendSettings(
                kind=kind, device=run.cfg.device, precision=prec, max_batch=128, engine_cache=str(run.out / "trt-cache")
            )
            den = OrtDenoiser(run.onnx_path, spec, settings)
            run.note(f"{label}: session providers {den.graph.providers}")
            time_numpy_sampler(run, label, prec, den)
        except Exception as e:
            run.note(f"{label}: failed: {e!r}"[:300])


def time_native_tensorrt(run: GpuRun, spec) -> None:
    from service.backends.base import BackendSettings

    if run.cfg.device != "cuda":
        run.note("native TensorRT: skipped (needs CUDA)")
        return
    try:
        import tensorrt

        version = tensorrt.__version__
    except ImportError:
        run.note("native TensorRT: tensorrt is not installed, skipped")
        return
    if "trt" in run.cfg.skip or not run.budget_left("native TensorRT"):
        return
    try:
        from service.backends.tensorrt import TensorRTDenoiser

        settings = BackendSettings(
            kind="tensorrt", device="cuda", precision="fp16", max_batch=128, engine_cache=str(run.out / "trt")
        )
        t0 = time.perf_counter()
        den = TensorRTDenoiser(run.onnx_path, spec, settings)
        run.note(f"native TensorRT {version}: engine ready in {time.perf_counter() - t0:.0f} s")
        time_numpy_sampler(run, "native TensorRT", "fp16", den)
    except Exception as e:
        run.note(f"native TensorRT {version}: failed: {e!r}"[:300])


def table(doc: dict[str, Any]) -> str:
    lines = [f"GPU check: {doc['device']}, torch {doc['torch']}, CUDA {doc['cuda']}, model {doc['model']}", ""]
    if "matmul_peak_tflops" in doc:
        lines.append(
            "matmul peaks (TFLOP/s): " + ", ".join(f"{k} {v:.1f}" for k, v in doc["matmul_peak_tflops"].items())
        )
    par = doc.get("parity", {})
    if "denoiser_max_abs" in par:
        lines.append(
            f"parity vs CPU ({par['criteria']}): denoiser max abs {par['denoiser_max_abs']:.2e} over "
            f"{par['steps']} steps, final images max {par['image_max_abs_255']}/255 -> "
            f"{'PASS' if par['pass'] else 'FAIL'}"
        )
    else:
        lines.append(f"parity: {par}")
    lines += [
        "",
        "| mode | precision | K | batch | images/s | ms/sample | TFLOP/s | note |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in sorted(doc["rows"], key=lambda r: (r["steps"], r["mode"], r["precision"], r["batch"])):
        ips = f"{r['images_per_s']:.1f}" if "images_per_s" in r else "-"
        ms = f"{r['median_ms']:.2f}" if "median_ms" in r else "-"
        tf = f"{r['tflops']:.2f}" if "tflops" in r else "-"
        lines.append(
            f"| {r['mode']} | {r['precision']} | {r['steps']} | {r['batch']} | {ips} | {ms} | {tf} | {r['note']} |"
        )
    lines += ["", *[f"- {n}" for n in doc["notes"]], ""]
    return "\n".join(lines)
