"""`fewstep bench ...`: sampler throughput, reduced-precision quality, the GPU check."""

from __future__ import annotations

import argparse
import logging

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


def _sampler(args: argparse.Namespace) -> int:
    passive_omp()
    from bench.paths import DEFAULT_PATHS, PATHS
    from bench.sampler import markdown, run_sampler_bench, write_results

    names = list(PATHS) if args.backends == ["all"] else args.backends or list(DEFAULT_PATHS)
    unknown = [n for n in names if n not in PATHS]
    if unknown:
        raise ValueError(f"--backends: unknown {unknown}; choose from {list(PATHS)} or 'all'")
    doc = run_sampler_bench(
        args.model,
        names,
        batches=args.batches,
        steps=args.steps,
        device=args.device,
        threads=args.threads,
        min_repeats=args.repeats,
        min_cell_seconds=args.min_cell_seconds,
    )
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
    from bench.quality import quality_row

    row = quality_row(
        args.model,
        args.backend,
        args.precision,
        n_images=args.n_images,
        steps=args.steps,
        guidance=args.guidance,
        compile=args.compile,
        out_dir=args.out,
        images_dir=args.images,
        evaluator_path=args.evaluator,
        batch_size=args.batch_size,
    )
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
    from pathlib import Path

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
    from bench.gpu import main

    rest = list(args.gpu_args)
    return main(rest[1:] if rest[:1] == ["--"] else rest)


def add_commands(sub: argparse._SubParsersAction) -> None:
    bench = sub.add_parser("bench", help="benchmarks: sampler throughput, precision quality, GPU check")
    bsub = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCH")

    s = bsub.add_parser("sampler", help="images/s by backend, precision, batch and K, against the matmul peaks")
    s.add_argument("--model", default="bundles/teacher", help="bundle directory")
    s.add_argument("--backends", nargs="+", help="paths to compare (default: all but onnxruntime-fp16; 'all')")
    s.add_argument("--batches", nargs="+", type=int, default=[1, 4, 16, 64], help="images per batch")
    s.add_argument("--steps", nargs="+", type=int, default=[4, 8], help="sampler steps K")
    s.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    s.add_argument("--threads", type=int, help="intra-op threads (default: all cores)")
    s.add_argument("--repeats", type=int, default=3, help="minimum interleaved rounds per cell")
    s.add_argument("--min-cell-seconds", type=float, default=2.0, help="keep adding rounds (up to 9) until this")
    s.add_argument("--out", default="results/bench/sampler.json", help="JSON path (markdown beside it)")
    s.set_defaults(handler=_sampler)

    q = bsub.add_parser("quality", help="evaluator figures (FD, adherence) of one backend/precision, fixed seeds")
    q.add_argument("--model", default="bundles/teacher", help="bundle directory")
    q.add_argument("--backend", default="torch", choices=["onnxruntime", "openvino", "torch"])
    q.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16", "int8"])
    q.add_argument("--compile", action="store_true", help="torch backend: torch.compile the denoiser")
    q.add_argument("--n-images", type=int, default=500)
    q.add_argument("--steps", type=int, default=16)
    q.add_argument("--guidance", type=float, default=3.0)
    q.add_argument("--batch-size", type=int, default=64, help="images per generate() call")
    q.add_argument("--evaluator", default="models/evaluator")
    q.add_argument("--out", default="results/bench/quality", help="directory for the JSON row")
    q.add_argument("--images", default="runs/bench/quality", help="directory for the generated images (npz)")
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

    from bench.batch_profile import add_arguments as add_batch_profile_arguments
    from bench.batch_profile import main as batch_profile_main

    bp = bsub.add_parser("batch-profile", help="spread of the warm-up batch profile's choice over repeated starts")
    add_batch_profile_arguments(bp)
    bp.set_defaults(handler=batch_profile_main)

    from bench.http_cli import add_arguments

    add_arguments(bsub.add_parser("http", help="a real `fewstep serve` under load, beside the raw sampler's limit"))
    from bench.peer import add_arguments as add_peer_arguments

    add_peer_arguments(bsub.add_parser("peer", help="fewstep serve against LitServe, same bundle, alternated rounds"))

    g = bsub.add_parser("gpu", help="CUDA parity and timings (see deploy/gpu_check.sh); args after -- go to it")
    g.add_argument("gpu_args", nargs=argparse.REMAINDER)
    g.set_defaults(handler=_gpu)
