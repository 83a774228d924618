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

import argparse
import contextlib
import json
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

T0 = time.perf_counter()


def _elapsed() -> float:
    return time.perf_counter() - T0


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--model", default=None, help="bundle or packed model dir (default: bundles/teacher, models/teacher)"
    )
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--out", default=".", help="directory for gpu_check.md / gpu_check.json")
    p.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64])
    p.add_argument("--steps", nargs="+", type=int, default=[4, 8])
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--budget-s", type=float, default=210.0, help="skip what would start after this many seconds")
    p.add_argument("--skip", nargs="*", default=[], help="sections to skip: compile graph ort trt")
    p.add_argument(
        "--precisions", nargs="+", default=["fp32", "bf16", "fp16"], choices=["fp32", "bf16", "fp16"],
        help="torch precisions timed (eager, compile, graph); fewer fit a short lease",
    )  # fmt: skip
    args = p.parse_args(argv)
    global T0
    T0 = time.perf_counter()

    import torch

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.model is None:
        args.model = next((m for m in ("bundles/teacher", "models/teacher") if Path(m).is_dir()), "models/teacher")
    device = args.device
    if device == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available: nothing to check (use --device cpu for a dry run)")
        return 1
    cfg, weights, onnx_path, tokens = load_model(Path(args.model))
    shape = (cfg.in_channels, cfg.resolution, cfg.resolution)
    w = args.guidance
    doc: dict[str, Any] = {
        "model": args.model,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "rows": [],
        "notes": [],
    }
    rows, notes = doc["rows"], doc["notes"]

    def note(msg: str) -> None:
        print(msg, flush=True)
        notes.append(msg)

    def add(mode: str, precision: str, batch: int, steps: int, times: list[float] | None, extra: str = "") -> None:
        row = {"mode": mode, "precision": precision, "batch": batch, "steps": steps, "note": extra}
        if times:
            med = statistics.median(times)
            row |= {"median_ms": 1000 * med, "images_per_s": batch / med, "repeats": len(times)}
            row["tflops"] = row["images_per_s"] * 2 * steps * flops / 1e12
        rows.append(row)
        ips = f"{row['images_per_s']:9.1f} img/s" if times else "        -      "
        print(f"  {mode:28s} {precision:5s} b={batch:3d} K={steps}: {ips} {extra}", flush=True)

    def flush() -> str:
        """Write what has been measured so far (a later section may hang or be killed by the timeout)."""
        doc["elapsed_s"] = _elapsed()
        (out / "gpu_check.json").write_text(json.dumps(doc, indent=2) + "\n")
        md = table(doc)
        (out / "gpu_check.md").write_text(md)
        return md

    def budget_left(what: str) -> bool:
        flush()
        if _elapsed() > args.budget_s:
            note(f"{what}: skipped (time budget of {args.budget_s:.0f} s spent)")
            return False
        return True

    from bench.measure import denoiser_flops, matmul_peak

    cpu_model = build(cfg, weights, "cpu")
    flops = denoiser_flops(cpu_model, 2, cfg.in_channels, cfg.resolution, tokens, cfg.text_dim)["per_image"]
    doc["flops_per_eval_per_image"] = flops
    if device == "cuda":
        doc["matmul_peak_tflops"] = {
            dt: matmul_peak(dt, 4096, repeats=10, device="cuda") / 1000 for dt in ("fp32", "bf16", "fp16")
        }
        print(
            f"{doc['device']}, torch {torch.__version__}, CUDA {torch.version.cuda}; peaks {doc['matmul_peak_tflops']}"
        )

    print("== parity (device vs CPU, fp32, TF32 off)")
    try:
        doc["parity"] = parity(cfg, weights, device, tokens, max(args.steps), w)
        print(f"  {doc['parity']}")
    except Exception as e:
        doc["parity"] = {"error": repr(e)}
        note(f"parity failed: {e!r}")
        traceback.print_exc()

    conds = {b: Cond(b, tokens, cfg.text_dim, seed=b) for b in args.batches}
    seeds = {b: list(range(b)) for b in args.batches}
    model = build(cfg, weights, device)
    dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

    def time_sampler(mode: str, prec: str, call: Callable) -> None:
        for k in args.steps:
            for b in args.batches:
                times = timeit(
                    lambda b=b, k=k: sample_torch(call, conds[b], k, device, w, seeds[b], shape), device, args.repeats
                )
                add(mode, prec, b, k, times)

    print("== torch eager (the service's loop: fewstep.sampler, seeded host noise)")
    for prec, dt in dtypes.items():
        if prec in args.precisions and budget_left(f"eager {prec}"):
            time_sampler("torch eager", prec, torch_call(model, dt))

    compiled = {}
    if "compile" in args.skip:
        note("torch.compile: skipped (--skip compile)")
    else:
        print("== torch.compile (dynamic batch)")
        for prec in ("fp32", "bf16"):
            if prec not in args.precisions or not budget_left(f"torch.compile {prec}"):
                continue
            try:
                t0 = time.perf_counter()
                cm = torch.compile(model, dynamic=True)
                call = torch_call(cm, dtypes[prec])
                for b in args.batches:  # compile before timing
                    sample_torch(call, conds[b], min(args.steps), device, w, seeds[b], shape)
                note(f"torch.compile {prec}: compiled and warmed in {time.perf_counter() - t0:.0f} s")
                compiled[prec] = cm
                time_sampler("torch.compile", prec, call)
            except Exception as e:
                note(f"torch.compile {prec}: failed: {e!r}")

    if device != "cuda":
        note("CUDA-graph replay: skipped (needs CUDA)")
    elif "graph" in args.skip:
        note("CUDA-graph replay: skipped (--skip graph)")
    else:
        print("== CUDA-graph replay of the whole k-step loop")
        variants = [("graph eager", p, model) for p in ("fp32", "bf16") if p in args.precisions]
        variants += [("graph torch.compile", p, m) for p, m in compiled.items() if p == "bf16"]
        for mode, prec, m in variants:
            if not budget_left(f"{mode} {prec}"):
                continue
            for k in args.steps:
                for b in args.batches:
                    try:
                        call = torch_call(m, dtypes[prec])
                        g = GraphedSampler(call, conds[b], k, w, seeds[b], shape)
                        ref = sample_torch(call, conds[b], k, device, w, seeds[b], shape)
                        diff = float((g.run().float() - ref.float()).abs().max())
                        add(mode, prec, b, k, timeit(g.run, device, args.repeats), f"vs eager loop {diff:.1e}")
                    except Exception as e:
                        add(mode, prec, b, k, None, f"failed: {e!r}"[:160])

    time_numpy_backends(args, device, cfg, tokens, onnx_path, conds, seeds, shape, w, add, note, budget_left)

    md = flush()
    print()
    print(md)
    print(f"wrote {out / 'gpu_check.md'} and {out / 'gpu_check.json'} ({_elapsed():.0f} s)")
    return 0


def time_numpy_backends(args, device, cfg, tokens, onnx_path, conds, seeds, shape, w, add, note, budget_left) -> None:
    """ONNX Runtime CUDA / TensorRT providers and native TensorRT, through the numpy sampler loop."""
    from fewstep.rng import SeededNoise
    from fewstep.sampler import ancestral_sample

    def run_numpy(name: str, prec: str, den) -> None:
        for k in args.steps:
            for b in args.batches:
                halves = conds[b].halves()
                fn = lambda b=b, k=k, c=halves: ancestral_sample(  # noqa: E731
                    guided(lambda z, t, s, m: den(z, t, s, m), *c, w), k, None, w, SeededNoise(seeds[b], shape)
                )
                add(name, prec, b, k, timeit(fn, "cpu", max(3, args.repeats // 2)))

    if onnx_path is None:
        note("ONNX graphs: skipped (no denoiser.onnx next to the model)")
        return
    try:
        import onnxruntime as ort

        available = ort.get_available_providers()
    except ImportError:
        note("onnxruntime: not installed, skipped")
        return
    from fewstep.bundle import denoiser_graph
    from service.backends.base import BackendSettings

    spec = denoiser_graph(cfg.resolution, cfg.in_channels, tokens, cfg.text_dim, cfg.guidance_input, max_batch=128)
    print(f"== ONNX Runtime {ort.__version__} (providers: {', '.join(available)})")
    wanted = [("onnxruntime", "CUDAExecutionProvider", "fp32"), ("tensorrt", "TensorrtExecutionProvider", "fp16")]
    if device == "cpu":
        wanted = [("onnxruntime", "CPUExecutionProvider", "fp32")]
    for kind, provider, prec in wanted:
        label = f"ort {provider.removesuffix('ExecutionProvider')}"
        if provider not in available:
            note(f"{label}: not available here (install onnxruntime-gpu), skipped")
            continue
        if "ort" in args.skip or not budget_left(label):
            continue
        try:
            from service.backends.onnxruntime import OrtDenoiser

            settings = BackendSettings(
                kind=kind, device=device, precision=prec, max_batch=128, engine_cache=str(Path(args.out) / "trt-cache")
            )
            den = OrtDenoiser(onnx_path, spec, settings)
            note(f"{label}: session providers {den.graph.providers}")
            run_numpy(label, prec, den)
        except Exception as e:
            note(f"{label}: failed: {e!r}"[:300])
    if device != "cuda":
        note("native TensorRT: skipped (needs CUDA)")
        return
    try:
        import tensorrt

        version = tensorrt.__version__
    except ImportError:
        note("native TensorRT: tensorrt is not installed, skipped")
        return
    if "trt" in args.skip or not budget_left("native TensorRT"):
        return
    try:
        from service.backends.tensorrt import TensorRTDenoiser

        settings = BackendSettings(
            kind="tensorrt", device="cuda", precision="fp16", max_batch=128, engine_cache=str(Path(args.out) / "trt")
        )
        t0 = time.perf_counter()
        den = TensorRTDenoiser(onnx_path, spec, settings)
        note(f"native TensorRT {version}: engine ready in {time.perf_counter() - t0:.0f} s")
        run_numpy("native TensorRT", "fp16", den)
    except Exception as e:
        note(f"native TensorRT {version}: failed: {e!r}"[:300])


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


if __name__ == "__main__":
    sys.exit(main())
