"""`fewstep bench sampler`: images per second of the k-step sampler by path, batch size and K.

Each measurement is one `Pipeline.sample` call (the service's loop: seeded per-image noise, the
shared `fewstep.sampler`, classifier-free guidance as one doubled batch, chunking at the
backend's max batch) over pre-encoded prompts: the prompt cache is warmed first, so the figures
are the denoiser loop's, without text encoding (a per-prompt cost the service caches).

Noise control on a shared 2-core machine: every path is built and warmed (compilation included)
before any timing; within each (batch, K) cell the paths run interleaved, in a rotated order,
for at least `min_repeats` rounds (more while the cell is short), and each figure is the median.
The fp32 and bf16 matmul peaks are measured at the start and at the end of the run.
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.measure import denoiser_flops, matmul_peak
from bench.paths import PATHS, BenchPath, bundle_prompts, make_path_denoiser, with_steps
from fewstep.bundle import Manifest, load_manifest
from fewstep.provenance import provenance

log = logging.getLogger(__name__)

BATCHES = (1, 4, 16, 64)
STEPS = (4, 8)
PROMPTS = 16  # distinct captions cycled over a batch


class IdentityDenoiser:
    """x_hat = z at no cost: what the loop costs outside the network (noise, updates, copies)."""

    max_batch = 1 << 30

    def __call__(self, z, t, states, mask, w=None):
        return z


def machine_info() -> dict[str, Any]:
    import os

    info: dict[str, Any] = {
        **provenance(),  # the commit, `-dirty` when the tree had uncommitted changes
        "platform": platform.platform(),
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (torch spins)"),
    }
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info["cpu"] = fields.get("Model name")
        info["cpus"] = fields.get("CPU(s)")
        info["cores_per_socket"] = fields.get("Core(s) per socket")
        info["threads_per_core"] = fields.get("Thread(s) per core")
        flags = fields.get("Flags", "").split()
        info["isa"] = [
            f for f in ("avx2", "avx512f", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8") if f in flags
        ]
    except (OSError, subprocess.CalledProcessError):
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    return info


def torch_model_flops(bundle: Path, manifest: Manifest) -> dict[str, Any]:
    """FLOPs per image per network evaluation, counted on the bundle's torch model."""
    import torch
    from safetensors.torch import load_file

    from fewstep.config import UNetConfig
    from fewstep.networks import build_denoiser

    cfg = UNetConfig.model_validate(json.loads((bundle / "torch" / "unet.json").read_text()))
    model = build_denoiser(cfg)
    model.load_state_dict(load_file(bundle / "torch" / "model.safetensors"))
    model.eval().requires_grad_(False)
    with torch.inference_mode():
        return denoiser_flops(
            model, 2, manifest.channels, manifest.resolution, manifest.text.max_tokens, manifest.text.hidden
        )


def _jobs(batch: int, steps: int, guidance: float, captions: Sequence[str]):
    from service.pipeline import ImageJob

    return [ImageJob(captions[i % len(captions)], i, steps, guidance) for i in range(batch)]


@dataclass(frozen=True)
class SamplerBenchConfig:
    """What `run_sampler_bench` times: the bundle, the paths (`bench.paths.PATHS` names or paths),
    the grid of batch sizes and step counts, and how long each cell runs."""

    bundle: str | Path
    paths: tuple[str | BenchPath, ...]
    batches: tuple[int, ...] = BATCHES
    steps: tuple[int, ...] = STEPS
    device: str = "cpu"
    threads: int | None = None  # intra-op threads (None: all cores)
    min_repeats: int = 3  # interleaved rounds per cell, at least
    max_repeats: int = 9  # ... and at most, while the cell is shorter than min_cell_seconds
    min_cell_seconds: float = 2.0
    peak_size: int = 2048  # matmul size of the peak measurements


def run_sampler_bench(
    cfg: SamplerBenchConfig,
    *,
    prompts=None,
    denoisers: dict[str, Any] | None = None,
    report: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Time every path at every (batch, K); return the JSON document the CLI writes.

    `prompts` and `denoisers` (name -> Denoiser) may be injected (tests); by default the bundle's
    text encoder and `make_path_denoiser` are used."""
    from service.pipeline import Pipeline

    bundle, steps, batches = Path(cfg.bundle), cfg.steps, cfg.batches
    device, min_repeats = cfg.device, cfg.min_repeats
    manifest = with_steps(load_manifest(bundle), steps)
    guidance = manifest.guidance.default
    prompts = prompts or bundle_prompts(bundle, manifest)
    from bench.paths import calibration_captions

    captions = calibration_captions(PROMPTS)
    prompts(captions)
    prompts([manifest.text.null_prompt])

    peaks: dict[str, list[float]] = {"fp32": [], "bf16": []}

    def measure_peaks() -> None:
        for dt in peaks:
            peaks[dt].append(matmul_peak(dt, cfg.peak_size, device=device))
        report(f"matmul peaks: fp32 {peaks['fp32'][-1]:.0f}, bf16 {peaks['bf16'][-1]:.0f} GFLOP/s")

    measure_peaks()
    flops = torch_model_flops(bundle, manifest)
    evals_per_step = 1 if manifest.guidance.network_input or guidance == 1.0 else 2
    report(f"FLOPs per image per network evaluation: {flops['per_image'] / 1e6:.1f} M")

    chosen = [p if isinstance(p, BenchPath) else PATHS[p] for p in cfg.paths]
    built: dict[str, Any] = dict(denoisers or {})
    build_s: dict[str, float] = {}
    for p in chosen:
        if p.name in built:
            continue
        t0 = time.perf_counter()
        built[p.name] = make_path_denoiser(p, bundle, manifest, device, cfg.threads, prompts)
        build_s[p.name] = time.perf_counter() - t0
    built["sampler-only"] = IdentityDenoiser()
    pipes = {name: Pipeline(manifest, prompts, d, name) for name, d in built.items()}
    names = list(pipes)

    warm_s: dict[str, float] = {}
    for name in names:  # compile and first-call allocations at every batch size, before any timing
        t0 = time.perf_counter()
        for b in batches:
            pipes[name].sample(_jobs(b, min(steps), guidance, captions), min(steps))
        warm_s[name] = time.perf_counter() - t0
        report(f"warmed {name} in {warm_s[name] + build_s.get(name, 0.0):.1f} s")

    rows = []
    for k in steps:
        for b in batches:
            jobs = _jobs(b, k, guidance, captions)
            times: dict[str, list[float]] = {n: [] for n in names}
            t_cell = time.perf_counter()
            r = 0
            while r < min_repeats or (r < cfg.max_repeats and time.perf_counter() - t_cell < cfg.min_cell_seconds):
                order = names[r % len(names) :] + names[: r % len(names)]
                for name in order:
                    t0 = time.perf_counter()
                    pipes[name].sample(jobs, k)
                    times[name].append(time.perf_counter() - t0)
                r += 1
            for name in names:
                med = statistics.median(times[name])
                p = PATHS.get(name)
                rows.append(
                    {
                        "path": name,
                        "backend": p.backend if p else name,
                        "precision": p.precision if p else "-",
                        "compile": p.compile if p else False,
                        "batch": b,
                        "steps": k,
                        "evals_per_image": k * evals_per_step,
                        "median_s": med,
                        "images_per_s": b / med,
                        "repeats": len(times[name]),
                        "times_s": times[name],
                    }
                )
            fastest = max(
                (r for r in rows[-len(names) :] if r["path"] != "sampler-only"), key=lambda r: r["images_per_s"]
            )
            report(f"K={k} batch {b:3d}: {r} rounds, fastest {fastest['path']} {fastest['images_per_s']:.1f} img/s")
    measure_peaks()

    peak = {dt: statistics.median(v) for dt, v in peaks.items()}
    for row in rows:
        f = row["evals_per_image"] * flops["per_image"]
        row["flops_per_image"] = f
        row["gflops"] = row["images_per_s"] * f / 1e9 if row["path"] != "sampler-only" else None
        row["frac_fp32_peak"] = row["gflops"] / peak["fp32"] if row["gflops"] else None
        row["frac_bf16_peak"] = row["gflops"] / peak["bf16"] if row["gflops"] else None
    return {
        "bundle": str(bundle),
        "model": manifest.name,
        "device": device,
        "guidance": guidance,
        "machine": machine_info(),
        "matmul_peak_gflops": {"size": cfg.peak_size, "median": peak, "runs": peaks},
        "flops_per_eval_per_image": flops,
        "build_seconds": build_s,
        "warmup_seconds": warm_s,
        "rows": rows,
        "ratios": ratios(rows, peak),
    }


def _lookup(rows: list[dict], path: str, batch: int, steps: int) -> dict | None:
    return next((r for r in rows if (r["path"], r["batch"], r["steps"]) == (path, batch, steps)), None)


def ratios(rows: list[dict], peak: dict[str, float]) -> dict[str, Any]:
    """The issue's targets: ORT fp32 / torch eager fp32 per batch; fastest path vs half the bf16 peak."""
    out: dict[str, Any] = {"ort_vs_torch_fp32": [], "fastest_at_max_batch": []}
    for k in sorted({r["steps"] for r in rows}):
        for b in sorted({r["batch"] for r in rows}):
            ort, eager = _lookup(rows, "onnxruntime-fp32", b, k), _lookup(rows, "torch-fp32", b, k)
            if ort and eager:
                out["ort_vs_torch_fp32"].append(
                    {"steps": k, "batch": b, "ratio": ort["images_per_s"] / eager["images_per_s"]}
                )
        bmax = max(r["batch"] for r in rows if r["steps"] == k)
        cands = [r for r in rows if r["steps"] == k and r["batch"] == bmax and r["gflops"]]
        if cands:
            best = max(cands, key=lambda r: r["images_per_s"])
            out["fastest_at_max_batch"].append(
                {
                    "steps": k,
                    "batch": bmax,
                    "path": best["path"],
                    "gflops": best["gflops"],
                    "half_bf16_peak": peak["bf16"] / 2,
                    "ratio_to_half_bf16_peak": best["gflops"] / (peak["bf16"] / 2),
                }
            )
    return out


def _fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(doc: dict[str, Any]) -> str:
    """The results as markdown tables (images/s; achieved GFLOP/s and fraction of the peaks)."""
    rows = doc["rows"]
    peak = doc["matmul_peak_gflops"]["median"]
    f_eval = doc["flops_per_eval_per_image"]["per_image"]
    lines = [
        f"Model `{doc['model']}` on {doc['device']} ({doc['machine'].get('cpu', '?')}, "
        f"{doc['machine'].get('torch_threads', '?')} threads); guidance {doc['guidance']:g} "
        f"(two network evaluations per image per step); {f_eval / 1e6:.1f} MFLOP per image per evaluation; "
        f"matmul peaks fp32 {peak['fp32']:.0f}, bf16 {peak['bf16']:.0f} GFLOP/s "
        f"(runs {', '.join(f'{x:.0f}' for x in doc['matmul_peak_gflops']['runs']['fp32'])} / "
        f"{', '.join(f'{x:.0f}' for x in doc['matmul_peak_gflops']['runs']['bf16'])}).",
        "",
    ]
    batches = sorted({r["batch"] for r in rows})
    for k in sorted({r["steps"] for r in rows}):
        lines += [
            f"**K = {k}** - images/s (median), and at the largest batch achieved GFLOP/s and % of fp32 / bf16 peak",
            "",
            "| path | " + " | ".join(f"b={b}" for b in batches) + " | GFLOP/s | % fp32 pk | % bf16 pk |",
            "|---|" + "---:|" * (len(batches) + 3),
        ]
        for path in dict.fromkeys(r["path"] for r in rows):
            cells = [_lookup(rows, path, b, k) for b in batches]
            last = cells[-1] or {}
            pct = [last.get(f) and 100 * last[f] for f in ("frac_fp32_peak", "frac_bf16_peak")]
            lines.append(
                f"| {path} | "
                + " | ".join(_fmt(c and c["images_per_s"], ".1f") for c in cells)
                + f" | {_fmt(last.get('gflops'), '.0f')} | {_fmt(pct[0], '.0f')} | {_fmt(pct[1], '.0f')} |"
            )
        lines.append("")
    r = doc["ratios"]
    if r["ort_vs_torch_fp32"]:
        lines += [
            "ONNX Runtime fp32 / torch eager fp32 (target >= 1.5 at batch 64, >= 1 everywhere): "
            + "; ".join(f"K={x['steps']} b={x['batch']}: {x['ratio']:.2f}" for x in r["ort_vs_torch_fp32"]),
            "",
        ]
    for x in r["fastest_at_max_batch"]:
        lines.append(
            f"Fastest at K={x['steps']}, batch {x['batch']}: {x['path']}, {x['gflops']:.0f} GFLOP/s = "
            f"{x['ratio_to_half_bf16_peak']:.2f} x half the bf16 peak ({x['half_bf16_peak']:.0f} GFLOP/s)."
        )
    return "\n".join(lines) + "\n"


def write_results(doc: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=float) + "\n")
    md = out.with_suffix(".md")
    md.write_text(markdown(doc))
    return out, md
