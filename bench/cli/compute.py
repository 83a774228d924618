"""`fewstep bench` in one process: the sampler's throughput, reduced-precision quality, per-operator
profiles, the GPU check and the serving cost of candidate denoisers.

Each handler turns its flags into the module's typed config and calls one function of the module;
heavy imports (torch, onnxruntime) happen there, after `passive_omp`.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def passive_omp() -> None:
    """OpenMP workers that sleep when idle instead of spin-waiting (torch's default spins).

    ONNX Runtime's sessions already run without spinning (`service/backends/onnxruntime.py`);
    torch's OpenMP pool spins, and on a CPU shared with other work that made torch 5-15x slower
    (a batch-32 evaluation: 3.5-6.4 s spinning against 0.38-0.49 s passive, measured here with two
    other processes on the 2 cores). So both backends are measured the way a shared service would
    run them. Must run before torch is imported; an OMP_WAIT_POLICY already set is kept."""
    import os
    import sys

    if "torch" in sys.modules:
        log.warning("torch already imported: OMP_WAIT_POLICY cannot be changed for this process")
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def _write_json(doc: dict, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")


def _sampler(args: argparse.Namespace) -> int:
    passive_omp()
    from bench.paths import DEFAULT_PATHS, PATHS
    from bench.sampler import SamplerBenchConfig, markdown, run_sampler_bench, write_results

    names = list(PATHS) if args.backends == ["all"] else args.backends or list(DEFAULT_PATHS)
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        raise ValueError(f"--backends: unknown {unknown}; choose from {list(PATHS)} or 'all'")
    cfg = SamplerBenchConfig(
        bundle=args.model,
        paths=tuple(names),
        batches=tuple(args.batches),
        steps=tuple(args.steps),
        device=args.device,
        threads=args.threads,
        min_repeats=args.repeats,
        min_cell_seconds=args.min_cell_seconds,
    )
    doc = run_sampler_bench(cfg)
    doc["command"] = (
        f"fewstep bench sampler --model {args.model} --backends {' '.join(names)} "
        f"--batches {' '.join(map(str, args.batches))} --steps {' '.join(map(str, args.steps))} --device {args.device}"
    )
    json_path, md_path = write_results(doc, args.out)
    print(markdown(doc))
    print(f"wrote {json_path} and {md_path}")
    return 0


def _quality(args: argparse.Namespace) -> int:
    passive_omp()
    from bench.quality import QualityBenchConfig, quality_row

    cfg = QualityBenchConfig(
        bundle=args.model,
        backend=args.backend,
        precision=args.precision,
        n_images=args.n_images,
        steps=args.steps,
        guidance=args.guidance,
        compile=args.compile,
        out_dir=args.out,
        images_dir=args.images,
        evaluator_path=args.evaluator,
        batch_size=args.batch_size,
    )
    row = quality_row(cfg)
    a = row["adherence"]
    print(
        f"{row['name']}: FD {row['fd']:.1f} (bootstrap sd {row['fd_bootstrap_sd']:.1f}), adherence "
        f"{a['overall']:.3f} (se {row['adherence_se']:.3f}), held-out {a['held_out']:.3f}, "
        f"{row['seconds_per_image'] * 1000:.1f} ms/image"
    )
    if row.get("vs_reference"):
        v = row["vs_reference"]
        print(
            f"  vs {v['reference']}: mean |diff| {v['mean_abs_255']:.2f}/255, max {v['max_abs_255']}/255, "
            f"FD delta {v['fd_delta']:+.1f}, adherence delta {v['adherence_delta']:+.3f}, "
            f"same verdict on {v['same_verdict_share']:.3f} of prompts"
        )
    return 0


def _profile(args: argparse.Namespace) -> int:
    passive_omp()
    from bench.profile import markdown, profile_ort, profile_torch

    bundle = Path(args.model)
    for engine in args.engines:
        if engine == "onnxruntime":
            prof = profile_ort(bundle, args.batch, args.runs)
        elif engine == "onnxruntime-legacy":
            from bench.paths import legacy_graph
            from fewstep.bundle import load_manifest

            prof = profile_ort(bundle, args.batch, args.runs, graph=legacy_graph(bundle, load_manifest(bundle)))
            prof["engine"] = "onnxruntime (legacy graph)"
        else:
            prof = profile_torch(bundle, args.batch, engine.removeprefix("torch-"), args.runs)
        print(markdown(prof, args.top))
    return 0


def _gpu(args: argparse.Namespace) -> int:
    from bench.gpu import GpuCheckConfig, run_gpu_check

    cfg = GpuCheckConfig(
        model=args.model,
        device=args.device,
        out=args.out,
        batches=tuple(args.batches),
        steps=tuple(args.steps),
        guidance=args.guidance,
        repeats=args.repeats,
        budget_s=args.budget_s,
        skip=tuple(args.skip),
        precisions=tuple(args.precisions),
    )
    return run_gpu_check(cfg)


def _model_cost(args: argparse.Namespace) -> int:
    from bench.model_cost import cost_table

    _write_json(cost_table(args.models, args.batch, args.rounds, args.threads), args.out)
    return 0


def add_compute_commands(bsub: argparse._SubParsersAction) -> None:
    from bench.gpu import PRECISIONS, SECTIONS, GpuCheckConfig
    from bench.quality import QualityBenchConfig
    from bench.sampler import BATCHES, STEPS, SamplerBenchConfig

    d = SamplerBenchConfig(bundle="bundles/teacher", paths=())
    s = bsub.add_parser("sampler", help="images/s by backend, precision, batch and K, against the matmul peaks")
    s.add_argument("--model", default=str(d.bundle), help="bundle directory")
    s.add_argument("--backends", nargs="+", help="paths to compare (default: all but onnxruntime-fp16; 'all')")
    s.add_argument("--batches", nargs="+", type=int, default=list(BATCHES), help="images per batch")
    s.add_argument("--steps", nargs="+", type=int, default=list(STEPS), help="sampler steps K")
    s.add_argument("--device", default=d.device, choices=["cpu", "cuda"])
    s.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    s.add_argument("--repeats", type=int, default=d.min_repeats, help="minimum interleaved rounds per cell")
    s.add_argument(
        "--min-cell-seconds",
        type=float,
        default=d.min_cell_seconds,
        help=f"keep adding rounds (up to {d.max_repeats}) until this",
    )
    s.add_argument("--out", default="results/bench/sampler.json", help="JSON path (markdown beside it)")
    s.set_defaults(handler=_sampler)

    dq = QualityBenchConfig(bundle="bundles/teacher", backend="torch", precision="bf16")
    q = bsub.add_parser("quality", help="evaluator figures (FD, adherence) of one backend/precision, fixed seeds")
    q.add_argument("--model", default=str(dq.bundle), help="bundle directory")
    q.add_argument("--backend", default=dq.backend, choices=["onnxruntime", "openvino", "torch"])
    q.add_argument("--precision", default=dq.precision, choices=["fp32", "bf16", "fp16", "int8"])
    q.add_argument("--compile", action="store_true", help="torch backend: torch.compile the denoiser")
    q.add_argument("--n-images", type=int, default=dq.n_images)
    q.add_argument("--steps", type=int, default=dq.steps)
    q.add_argument("--guidance", type=float, default=dq.guidance)
    q.add_argument("--batch-size", type=int, default=dq.batch_size, help="images per generate() call")
    q.add_argument("--evaluator", default=str(dq.evaluator_path))
    q.add_argument("--out", default=str(dq.out_dir), help="directory for the JSON row")
    q.add_argument("--images", default=str(dq.images_dir), help="directory for the generated images (npz)")
    q.set_defaults(handler=_quality)

    f = bsub.add_parser("profile", help="per-operator time of one denoiser evaluation (ORT and torch profilers)")
    f.add_argument("--model", default="bundles/teacher", help="bundle directory")
    f.add_argument(
        "--engines",
        nargs="+",
        default=["onnxruntime", "torch-fp32", "torch-bf16"],
        help="onnxruntime, onnxruntime-legacy (the previous export recipe's graph), torch-fp32, torch-bf16",
    )
    f.add_argument("--batch", type=int, default=64, help="denoiser batch (a guided batch of N images is 2N)")
    f.add_argument("--runs", type=int, default=3)
    f.add_argument("--top", type=int, default=12)
    f.set_defaults(handler=_profile)

    dg = GpuCheckConfig()
    g = bsub.add_parser(
        "gpu", help="CUDA parity against the CPU and sampler timings (deploy/gpu_check.sh runs it on a lent GPU)"
    )
    g.add_argument("--model", help="bundle or packed model dir (default: bundles/teacher, models/teacher)")
    g.add_argument("--device", default=dg.device, choices=["cuda", "cpu"], help="cpu: a dry run of the same code")
    g.add_argument("--out", default=dg.out, help="directory for gpu_check.md / gpu_check.json")
    g.add_argument("--batches", nargs="+", type=int, default=list(dg.batches))
    g.add_argument("--steps", nargs="+", type=int, default=list(dg.steps))
    g.add_argument("--guidance", type=float, default=dg.guidance)
    g.add_argument("--repeats", type=int, default=dg.repeats)
    g.add_argument("--budget-s", type=float, default=dg.budget_s, help="skip what would start after this many seconds")
    g.add_argument("--skip", nargs="*", default=list(dg.skip), help=f"sections to skip: {' '.join(SECTIONS)}")
    g.add_argument(
        "--precisions", nargs="+", default=list(dg.precisions), choices=PRECISIONS,
        help="torch precisions timed (eager, compile, graph); fewer fit a short lease",
    )  # fmt: skip
    g.set_defaults(handler=_gpu)

    c = bsub.add_parser(
        "model-cost", help="parameters, FLOPs per evaluation and ONNX Runtime CPU time of packed models"
    )
    c.add_argument("models", nargs="+", type=Path, help="packed model directories")
    c.add_argument("--batch", type=int, default=16)
    c.add_argument("--rounds", type=int, default=7)
    c.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    c.add_argument("--out", type=Path, required=True)
    c.set_defaults(handler=_model_cost)
