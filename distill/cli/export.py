"""`fewstep export`: a trained model to a bundle (ONNX graphs, tokenizer, hashed manifest)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)

# The figures of a results row that a bundle's manifest records (`fewstep export --evaluation`).
EVAL_KEYS = ("sampler", "steps", "guidance", "nfe", "n_images", "fd", "fd_infinity", "fd_ci", "kid", "kid_ci",
             "precision", "recall", "adherence", "adherence_ci", "eval_set_version", "model_sha256",
             "seconds_per_image", "machine", "git_sha")  # fmt: skip


def _evaluation_rows(files: list[str], model: Path) -> dict[str, dict]:
    """The results rows a bundle records, keyed `{sampler}-{steps}-w{guidance}`. A row measured on
    other weights is refused by name: a bundle that quotes another model's figures is worse than
    one that quotes none (rows from before `model_sha256` was recorded are taken as they are)."""
    import json

    from distill.kit.checkpoint import weights_file
    from fewstep.bundle import sha256_file

    sha = sha256_file(weights_file(model)[0])
    evaluation = {}
    for f in files:
        row = json.loads(Path(f).read_text())
        if row.get("model_sha256") not in (None, sha):
            raise SystemExit(f"--evaluation {f}: measured on weights {row['model_sha256'][:12]}, not {model}'s "
                             f"{sha[:12]}; re-evaluate it (make results-all)")  # fmt: skip
        evaluation[f"{row['sampler']}-{row['steps']}-w{row['guidance']:g}"] = {k: row.get(k) for k in EVAL_KEYS}
    return evaluation


def _precision_checks(files: list[str]) -> list:
    """The committed reduced-precision measurements (`scripts.precision`'s results/precision/NAME.json:
    label -> check) a bundle records; export keeps those of the graph it writes."""
    import json

    from pydantic import ValidationError

    from fewstep.bundle import PrecisionCheck

    checks = []
    for f in files:
        try:
            data = json.loads(Path(f).read_text())
            checks += [PrecisionCheck.model_validate(c) for c in data.values()]
        except (OSError, json.JSONDecodeError, AttributeError, ValidationError) as e:
            raise SystemExit(f"--precision {f}: not a precision measurement file ({e})") from None
    return checks


def _export(args: argparse.Namespace) -> int:
    from distill.export.bundle import ExportOptions, export_bundle

    options = ExportOptions(
        name=args.name, steps=args.steps, default_steps=args.default_steps,
        guidance=tuple(args.guidance) if args.guidance else None,
        evaluation=_evaluation_rows(args.evaluation, Path(args.model)), cache_dir=args.cache_dir,
        max_batch=args.max_batch, reduced_precision=tuple(_precision_checks(args.precision)),
    )  # fmt: skip
    manifest = export_bundle(args.model, args.out, options)
    log.info(
        "bundle %s: steps %s (default %d), guidance %g..%g (default %g), %d files",
        manifest.name, sorted(manifest.steps), manifest.default_steps, manifest.guidance.min, manifest.guidance.max,
        manifest.guidance.default, len(manifest.files),
    )  # fmt: skip
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    ex = sub.add_parser("export", help="export a trained model to a bundle (ONNX graphs + tokenizer + manifest)")
    ex.add_argument("--model", required=True, help="packed model (models/NAME) or training run")
    ex.add_argument("--out", required=True, help="bundle directory, e.g. bundles/teacher")
    ex.add_argument("--name", help="model name served (default: the --out directory's name)")
    ex.add_argument("--steps", type=int, nargs="+", help="supported step counts (teacher default: 8 16 32 64)")
    ex.add_argument("--default-steps", type=int, help="default step count (teacher: 16)")
    ex.add_argument("--guidance", type=float, nargs=3, metavar=("MIN", "DEFAULT", "MAX"), help="guidance range")
    ex.add_argument("--evaluation", action="append", default=[], metavar="JSON", help="results row(s) to record")
    ex.add_argument(
        "--precision", action="append", default=[], metavar="JSON",
        help="reduced-precision measurement(s) to record (results/precision/NAME.json); kept where they "
        "measured the exported denoiser graph, else dropped with a warning (kind=auto then serves fp32)",
    )  # fmt: skip
    ex.add_argument("--cache-dir", help="where the text encoder graph is cached (default: OUT/../.cache)")
    ex.add_argument("--max-batch", type=int, default=64, help="largest batch the graphs' engines must support")
    ex.set_defaults(handler=_export)
