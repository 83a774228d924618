"""Measure each bundle's reduced-precision paths against fp32 and record the result in its manifest.

`backend.kind = "auto"` serves a reduced precision (OpenVINO bf16 on a CPU with native bf16) only
where the bundle's manifest holds a passing measurement of that path (`fewstep.bundle.
PrecisionCheck`, read by `service.backends.select.quality_allows`). This writes it: the bundle's
own pipeline (`service.loader`, the sampler the service runs) in the reduced precision and in fp32
on the same backend, on fixed prompts and image seeds (the first in-distribution prompts of the
evaluation set, `distill.evaluation.eval_set`, at the bundle's default steps and guidance); the
pixel difference of the two image sets; the frozen evaluator's adherence of both and the paired
drop with a 95% bootstrap interval over prompts. The permission is the stated threshold
(`fewstep.bundle.MAX_ADHERENCE_DROP` and its neighbours), applied by `PrecisionCheck` itself.

    .venv/bin/python -m scripts.precision                       # every bundle under bundles/
    .venv/bin/python -m scripts.precision --bundles bundles mm-alt-k8 --n 400

The checks go into the bundle's manifest (its file hashes are recomputed and unchanged), so the
bundle serves accordingly at once, and into results/precision/NAME.json (committed: bundles/ is
built, not committed), which `make bundles` passes to `fewstep export --precision` so that a rebuilt
bundle of the same denoiser graph records the same measurement. A path that cannot run on this
machine (no native bf16, package missing) is reported and left unmeasured, so it is not served.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

import shapesworld as shapes
from fewstep.bundle import (
    MAX_ADHERENCE_DROP,
    MAX_ADHERENCE_DROP_UPPER,
    MAX_PIXEL_MEAN_ABS,
    PrecisionCheck,
    load_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

PATHS = ("openvino-bf16",)
RESULTS = Path("results/precision")
MOVED_LEVELS = 8.0  # an image "moved" when its mean |difference| exceeds this many 0-255 levels
Score = Callable[[np.ndarray, Sequence[shapes.PromptSpec]], np.ndarray]


def fixed_prompts(n: int) -> tuple[list[str], list[int], list[shapes.PromptSpec]]:
    """The first `n` in-distribution prompts of the evaluation set, their image seeds and specs."""
    from distill.evaluation.eval_set import eval_set

    items = [e for e in eval_set(2 * n) if e.group == "train"][:n]
    if len(items) < n:
        raise ValueError(f"the evaluation set has {len(items)} in-distribution prompts, not {n}")
    return [e.item.caption for e in items], [e.seed for e in items], [e.spec for e in items]


def compare(
    reference: np.ndarray, reduced: np.ndarray, hits_reference: np.ndarray, hits_reduced: np.ndarray
) -> dict[str, object]:
    """Pixel difference and the paired adherence drop (reference - reduced) with its interval."""
    from distill.evaluation.bootstrap import mean_resampled, percentile_interval, resample_counts

    if reference.shape != reduced.shape or len(hits_reference) != len(reference) != len(hits_reduced):
        raise ValueError("reference and reduced images and hits must pair one to one")
    diff = np.abs(reference.astype(np.float64) - reduced.astype(np.float64))
    per_image = diff.reshape(len(diff), -1).mean(axis=1)
    hr, hd = np.asarray(hits_reference, np.float64), np.asarray(hits_reduced, np.float64)
    counts = resample_counts(len(hr))
    ci = percentile_interval(mean_resampled(counts, hr - hd))
    return {
        "pixel_mean_abs": float(diff.mean()),
        "pixel_max_abs": float(diff.max()),
        "images_moved": float((per_image > MOVED_LEVELS).mean()),
        "adherence_reference": float(hr.mean()),
        "adherence": float(hd.mean()),
        "adherence_drop": float(hr.mean() - hd.mean()),
        "adherence_drop_ci": tuple(ci) if ci else (0.0, 0.0),
    }


def check(label: str, figures: dict[str, object], **fields: object) -> PrecisionCheck:
    """A `PrecisionCheck` whose `passed` is the stated rule applied to `figures`."""
    backend, precision = label.rsplit("-", 1)
    body = {"backend": backend, "precision": precision, "reference": f"{backend}-fp32", **figures, **fields}
    probe = PrecisionCheck.model_construct(**body, passed=False)
    return PrecisionCheck.model_validate({**body, "passed": probe.meets_threshold()})


def measure(
    bundle: Path, label: str, score: Score, n: int, batch: int = 50, command: str = "", machine_name: str = ""
) -> PrecisionCheck:
    """Run the bundle's pipeline on the fixed prompts in `label`'s precision and in fp32; the check."""
    from service.backends.base import BackendSettings
    from service.loader import load_pipeline
    from service.pipeline import ImageJob

    backend, precision = label.rsplit("-", 1)
    prompts, seeds, specs = fixed_prompts(n)
    images = {}
    for prec in ("fp32", precision):
        pipeline = load_pipeline(bundle, BackendSettings(kind=backend, precision=prec, threads=1), warmup=())
        m = pipeline.manifest
        jobs = [ImageJob(p, s, m.default_steps, m.guidance.default) for p, s in zip(prompts, seeds, strict=True)]
        images[prec] = np.concatenate([pipeline.generate(jobs[i : i + batch]) for i in range(0, n, batch)])
        log.info("%s: %d images in %s-%s", m.name, n, backend, prec)
    figures = compare(images["fp32"], images[precision], score(images["fp32"], specs), score(images[precision], specs))
    return check(
        label,
        figures,
        n_images=n,
        steps=m.default_steps,
        guidance=m.guidance.default,
        prompts=f"the first {n} in-distribution prompts of the evaluation set and their seeds",
        denoiser_sha256=m.files[m.graphs["denoiser"].file],
        machine=machine_name or machine(),
        measured_at=datetime.now(UTC).replace(microsecond=0),
        command=command,
    )


def evaluator_score(path: Path) -> Score:
    """Adherence hits (the predicted scene satisfies the prompt) by the frozen evaluator."""
    from distill.evaluation.evaluator import load_evaluator, predict

    model, _ = load_evaluator(path)

    def score(images: np.ndarray, specs: Sequence[shapes.PromptSpec]) -> np.ndarray:
        pred, _ = predict(model, images)
        return np.array([shapes.satisfies(p, s)["all"] for p, s in zip(pred, specs, strict=True)], dtype=bool)

    return score


def write_results(name: str, checks: Sequence[PrecisionCheck], results: Path = RESULTS) -> None:
    """results/precision/NAME.json (label -> check: what `fewstep export --precision` records in a
    rebuilt bundle) and the table of every bundle's checks, results/precision/precision.md."""
    results.mkdir(parents=True, exist_ok=True)
    path = results / f"{name}.json"
    old = json.loads(path.read_text()) if path.is_file() else {}
    old.update({c.label: c.model_dump(mode="json") for c in checks})
    path.write_text(json.dumps(old, indent=1) + "\n")
    lines = [
        "# Reduced precision measured per bundle",
        "",
        "`python -m scripts.precision` (the command and machine of each row are in its JSON): the bundle's "
        "pipeline in the reduced precision and in fp32 on the same backend, on the first in-distribution "
        "prompts of the evaluation set and their seeds, at the bundle's default steps and guidance; "
        "adherence by the frozen evaluator, the drop paired over prompts with a 95% bootstrap interval. "
        f"Permission (served by kind=auto): drop <= {MAX_ADHERENCE_DROP}, its upper bound <= "
        f"{MAX_ADHERENCE_DROP_UPPER}, mean pixel difference <= {MAX_PIXEL_MEAN_ABS:g} of 255 levels.",
        "",
        "| bundle | path | images | steps | adherence fp32 | adherence | drop [95% CI] | pixels mean / max "
        "| images moved > 8 levels | permitted | machine |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for f in sorted(results.glob("*.json")):
        for c in (PrecisionCheck.model_validate(v) for v in json.loads(f.read_text()).values()):
            lo, hi = c.adherence_drop_ci
            lines.append(
                f"| {f.stem} | {c.label} vs {c.reference} | {c.n_images} | {c.steps} | {c.adherence_reference:.3f} "
                f"| {c.adherence:.3f} | {c.adherence_drop:+.3f} [{lo:+.3f}, {hi:+.3f}] | {c.pixel_mean_abs:.2f} / "
                f"{c.pixel_max_abs:.0f} | {c.images_moved:.1%} | {'yes' if c.passed else '**no**'} | {c.machine} |"
            )
    (results / "precision.md").write_text("\n".join(lines) + "\n")


def record(bundle: Path, checks: Sequence[PrecisionCheck]) -> None:
    """Write the checks into the bundle's manifest (the other entries kept; hashes re-verified)."""
    m = load_manifest(bundle)
    write_manifest(
        bundle, m.model_copy(update={"reduced_precision": {**m.reduced_precision, **{c.label: c for c in checks}}})
    )
    load_manifest(bundle)


def machine() -> str:
    return f"{platform.machine()} {platform.processor()}".strip() + f", {os.cpu_count()} CPUs"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.precision", description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", help="bundle names under --bundles (default: all)")
    p.add_argument("--bundles", type=Path, default=Path("bundles"))
    p.add_argument("--paths", nargs="+", default=list(PATHS), help="reduced-precision paths to measure")
    p.add_argument("--evaluator", type=Path, default=Path("models/evaluator"))
    p.add_argument("--n", type=int, default=400, help="prompts (images per precision)")
    p.add_argument("--results", type=Path, default=RESULTS, help="where the committed measurements go")
    p.add_argument("--machine", default="", help="how the manifest names this machine (default: platform)")
    args = p.parse_args(argv)
    if args.n < 20:
        p.error("--n: at least 20 prompts for an interval")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    names = args.names or sorted(d.name for d in args.bundles.iterdir() if (d / "manifest.json").is_file())
    missing = [n for n in names if not (args.bundles / n / "manifest.json").is_file()]
    if missing:
        p.error(f"no bundle {missing} under {args.bundles}")
    from service.backends.base import BackendError

    score = evaluator_score(args.evaluator)
    command = "python -m scripts.precision " + shlex.join(sys.argv[1:] if argv is None else argv)
    failed = 0
    for name in names:
        checks = []
        for label in args.paths:
            try:
                c = measure(
                    args.bundles / name, label, score, args.n, command=command.strip(), machine_name=args.machine
                )
            except BackendError as e:
                log.error("%s: %s cannot run here, left unmeasured (kind=auto will not serve it): %s", name, label, e)
                failed += 1
                continue
            log.info("%s: %s %s", name, "PASSED" if c.passed else "FAILED", c.why())
            checks.append(c)
        if checks:
            record(args.bundles / name, checks)
            write_results(name, checks, args.results)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
