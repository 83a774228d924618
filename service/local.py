"""In-process commands over a bundle, no server: `fewstep generate` (and `fewstep bench sampler`).

`generate` runs the same loader, backend and `Pipeline.generate` as the service, so an image made
here is byte-identical to the service's for the same model, prompt, seed, steps and guidance.
"""

from __future__ import annotations

import argparse
import logging
import secrets
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_BUNDLES = "bundles"


def resolve_bundle(model: str, bundles_dir: str = DEFAULT_BUNDLES) -> Path:
    """A model name (a directory under `bundles_dir`) or a bundle path."""
    path = Path(model)
    if (path / "manifest.json").is_file():
        return path
    named = Path(bundles_dir) / model
    if (named / "manifest.json").is_file():
        return named
    found = sorted(p.parent.name for p in Path(bundles_dir).glob("*/manifest.json"))
    raise FileNotFoundError(
        f"--model: no bundle {model!r} (bundles in {bundles_dir}: {found or 'none'}; run `make bundles`)"
    )


def backend_settings(args: argparse.Namespace):
    from service.backends.base import BackendSettings

    return BackendSettings(
        kind=args.backend, device=args.device, precision=args.precision, threads=args.threads, compile=args.compile
    )


def add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", default="onnxruntime", choices=["onnxruntime", "openvino", "tensorrt", "torch", "auto"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16", "int8"])
    p.add_argument("--threads", type=int, help="intra-op CPU threads (default: all cores)")
    p.add_argument("--compile", action="store_true", help="torch backend: torch.compile the denoiser")


def save_grid(path: Path, images: np.ndarray, cols: int) -> None:
    from PIL import Image

    n, h, w, c = images.shape
    rows = -(-n // cols)
    canvas = np.full((rows * (h + 2), cols * (w + 2), c), 255, np.uint8)
    for i, im in enumerate(images):
        r, k = divmod(i, cols)
        canvas[r * (h + 2) : r * (h + 2) + h, k * (w + 2) : k * (w + 2) + w] = im
    Image.fromarray(canvas).save(path)


def _generate(args: argparse.Namespace) -> int:
    from PIL import Image

    from service.loader import load_pipeline
    from service.pipeline import ImageJob

    pipeline = load_pipeline(resolve_bundle(args.model, args.bundles), backend_settings(args), warmup=())
    m = pipeline.manifest
    steps = args.steps or m.default_steps
    guidance = m.guidance.default if args.guidance is None else args.guidance
    seed = secrets.randbelow(2**31) if args.seed is None else args.seed
    jobs = [ImageJob(args.prompt, seed + j, steps, guidance, args.negative_prompt) for j in range(args.n)]
    for job in jobs:
        pipeline.check(job)
    images = pipeline.generate(jobs)
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.grid or args.n == 1:
        if args.n == 1:
            Image.fromarray(images[0]).save(out)
        else:
            save_grid(out, images, cols=min(args.n, 8))
        paths = [out]
    else:
        paths = [out.with_name(f"{out.stem}-{j.seed}{out.suffix}") for j in jobs]
        for p, im in zip(paths, images, strict=True):
            Image.fromarray(im).save(p)
    print(f"model {m.name}, {steps} steps, guidance {guidance:g}, seeds {', '.join(str(j.seed) for j in jobs)}")
    for p in paths:
        print(p)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    g = sub.add_parser("generate", help="generate images in-process from a bundle (no server)")
    g.add_argument("prompt")
    g.add_argument("--model", default="teacher", help="bundle name under --bundles, or a bundle path")
    g.add_argument("--bundles", default=DEFAULT_BUNDLES, help="directory of bundles")
    g.add_argument("--steps", type=int, help="one of the bundle's step counts (default: its default)")
    g.add_argument("--guidance", type=float, help="guidance scale (default: the bundle's)")
    g.add_argument("--negative-prompt", help="what the teacher's guidance steers away from")
    g.add_argument("--seed", type=int, help="image j uses seed + j (default: random, printed)")
    g.add_argument("-n", "--n", type=int, default=1, help="number of images")
    g.add_argument("-o", "--output", default="out.png", help="PNG path (with n > 1: one file per seed)")
    g.add_argument("--grid", action="store_true", help="with n > 1, one grid PNG at --output")
    add_backend_args(g)
    g.set_defaults(handler=_generate)
    add_engine_command(sub)


def _build_engines(args: argparse.Namespace) -> int:
    from fewstep.bundle import load_manifest
    from service.backends.base import BackendSettings
    from service.backends.tensorrt import build_engine

    bundles = sorted(p.parent for p in Path(args.bundles).glob("*/manifest.json"))
    if not bundles:
        raise FileNotFoundError(f"--bundles: no bundles in {args.bundles}")
    settings = BackendSettings(kind="tensorrt", device="cuda", precision=args.precision, engine_cache=args.engine_cache)
    for bundle in bundles:
        spec = load_manifest(bundle).graphs["denoiser"]
        print(build_engine(bundle / spec.file, spec, settings))
    return 0


def add_engine_command(sub: argparse._SubParsersAction) -> None:
    b = sub.add_parser("build-engines", help="build TensorRT engines for every bundle on this GPU (deploy time)")
    b.add_argument("--bundles", default=DEFAULT_BUNDLES)
    b.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "bf16"])
    b.add_argument("--engine-cache", default=".cache/trt")
    b.set_defaults(handler=_build_engines)
