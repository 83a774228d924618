"""Measure which words the served models draw: each word against its canonical word, same scenes and seeds.

For every non-canonical word of the shapes-world vocabulary (`shapesworld.measured_vocabulary.alternatives`:
the training synonyms such as 'scarlet' and 'disc' and the held-out ones such as 'crimson' and
'pyramid'), `n` one-object scenes whose attribute is the word's value are drawn, each prompted twice
in one fixed form that states colour, shape and the attribute under test ("a crimson square",
"a tiny red square", "a red square at the upper left", "a red square on a grey background"): once
with the canonical word, once with the word. Both prompts of a scene get the same image seed, run
through the bundle's own pipeline (`service.loader`, ONNX Runtime fp32, the default backend), and
the frozen evaluator scores adherence (the predicted scene satisfies everything the prompt states).

A word's figure is ratio = adherence(word) / adherence(canonical), with a 95% paired bootstrap
interval over scenes (`distill.evaluation.bootstrap`); it is listed for a model where the ratio is
>= `shapesworld.measured_vocabulary.THRESHOLD` (0.85). Outputs:

    results/vocabulary/vocabulary.json  every figure, per model, with the command and the machine
    results/vocabulary/vocabulary.md    the table
    shapesworld/measured_vocabulary.json         the listing the service reads (`GET /info`, the warnings)

    .venv/bin/python -m scripts.vocabulary --models mm-alt-k8 --n 128
    .venv/bin/python -m scripts.vocabulary --models pd-k4 teacher --n 64   # merged into the same files

Running some models keeps the other models' figures already in the results file.
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import shapesworld as shapes
from shapesworld.measured_vocabulary import TABLES, THRESHOLD, VOCABULARY_FILE, Word, alternatives, parse_measured

log = logging.getLogger(__name__)

SEED = 515
RESULTS = Path("results/vocabulary")


@dataclass(frozen=True)
class Case:
    """One scene of a value's set: the record, and what a prompt of the fixed form constrains."""

    scene: shapes.Scene
    spec: shapes.PromptSpec
    seed: int


def value_index(category: str, value: str) -> int:
    """A stable number per (category, value): the stream its scenes come from."""
    keys = [(c, v) for c, t in TABLES.items() for v in t]
    return keys.index((category, value))


def _attribute(scene: shapes.Scene, category: str) -> str:
    o = scene.objects[0]
    return {
        "colours": o.colour,
        "shapes": o.shape,
        "sizes": o.size,
        "positions": shapes.CELLS[o.cell],
        "backgrounds": scene.background,
    }[category]


def cases(category: str, value: str, n: int, seed: int = SEED) -> list[Case]:
    """`n` one-object scenes (training colour-shape pairs) whose `category` attribute is `value`.

    Drawn by rejection from the ordinary scene sampler, so the other attributes keep their usual
    distribution; the prompt states colour, shape and the attribute under test only."""
    k = value_index(category, value)
    out = []
    i = 0
    while len(out) < n:
        rng = shapes.scene_rng(seed + 1000 * k, i)
        i += 1
        scene, _ = shapes.sample_scene(rng, mode="train", p_two=0.0)
        if _attribute(scene, category) != value:
            continue
        o = scene.objects[0]
        spec = shapes.PromptSpec(
            scene.background if category == "backgrounds" else None,
            (
                shapes.ObjectSpec(
                    o.colour,
                    o.shape,
                    o.size if category == "sizes" else None,
                    o.cell if category == "positions" else None,
                ),
            ),
        )
        out.append(Case(scene, spec, seed + 100_000 * k + len(out)))
    return out


def prompt(case: Case, category: str, word: str) -> str:
    """The fixed form with `word` for the attribute under test, canonical words for the rest."""
    o = case.scene.objects[0]
    colour = word if category == "colours" else o.colour
    shape = word if category == "shapes" else o.shape
    noun = f"{colour} {shape}"
    if category == "sizes":
        noun = f"{word} {noun}"
    text = ("an " if noun[0] in "aeiou" else "a ") + noun
    if category == "positions":
        text += f" at the {word}"
    if category == "backgrounds":
        text += f" on a {word} background"
    return text


def ratio_figures(hits_word: np.ndarray, hits_canonical: np.ndarray) -> dict[str, Any]:
    """Adherence of both, the ratio and its 95% paired bootstrap interval over scenes."""
    from distill.evaluation.bootstrap import mean_resampled, percentile_interval, resample_counts

    hw, hc = np.asarray(hits_word, dtype=np.float64), np.asarray(hits_canonical, dtype=np.float64)
    if hw.shape != hc.shape or hw.size == 0:
        raise ValueError(f"paired hits of equal, non-zero length needed, got {hw.shape} and {hc.shape}")
    counts = resample_counts(hw.size)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratios = mean_resampled(counts, hw) / mean_resampled(counts, hc)
    a_w, a_c = float(hw.mean()), float(hc.mean())
    return {
        "adherence": a_w,
        "adherence_ci": percentile_interval(mean_resampled(counts, hw)),
        "canonical_adherence": a_c,
        "ratio": a_w / a_c if a_c > 0 else None,
        "ratio_ci": percentile_interval(ratios),
    }


def is_listed(figures: dict[str, Any], threshold: float = THRESHOLD) -> bool:
    """Listed where the model draws the word at >= threshold times its canonical word (point estimate)."""
    return figures["ratio"] is not None and figures["ratio"] >= threshold


def measure_model(
    bundle: Path, evaluator_path: Path, n: int, batch: int = 64, categories: tuple[str, ...] = tuple(TABLES)
) -> dict[str, Any]:
    """Every word's figures for one bundle (ONNX Runtime fp32, the bundle's default steps and guidance);
    only the words of `categories` (a word left unmeasured is not listed for the model)."""
    from tqdm import tqdm

    from distill.evaluation.evaluator import load_evaluator, predict
    from service.backends.base import BackendSettings
    from service.loader import load_pipeline
    from service.pipeline import ImageJob

    pipeline = load_pipeline(bundle, BackendSettings(kind="onnxruntime", precision="fp32", threads=1), warmup=())
    evaluator, _ = load_evaluator(evaluator_path)
    m = pipeline.manifest
    steps, w = m.default_steps, m.guidance.default

    def hits(cs: list[Case], prompts: list[str]) -> np.ndarray:
        images = np.concatenate(
            [
                pipeline.generate(
                    [
                        ImageJob(p, c.seed, steps, w)
                        for c, p in zip(cs[i : i + batch], prompts[i : i + batch], strict=True)
                    ]
                )
                for i in range(0, len(cs), batch)
            ]
        )
        pred, _ = predict(evaluator, images)
        return np.array([shapes.satisfies(s, c.spec)["all"] for s, c in zip(pred, cs, strict=True)], dtype=bool)

    words = [x for x in alternatives() if x.category in categories]
    values = sorted({(x.category, x.value) for x in words}, key=lambda cv: value_index(*cv))
    canonical: dict[tuple[str, str], np.ndarray] = {}
    rows = []
    t0 = time.perf_counter()
    with tqdm(total=len(values) + len(words), desc=m.name, unit="set") as bar:
        for category, value in values:
            cs = cases(category, value, n)
            canonical[(category, value)] = hits(cs, [prompt(c, category, TABLES[category][value][0][0]) for c in cs])
            bar.update()
            for x in (x for x in words if (x.category, x.value) == (category, value)):
                got = hits(cs, [prompt(c, category, x.word) for c in cs])
                fig = ratio_figures(got, canonical[(category, value)])
                rows.append({**_word_fields(x), **fig, "listed": is_listed(fig)})
                bar.update()
    return {
        "steps": steps,
        "guidance": w,
        "backend": "onnxruntime-fp32",
        "weights_sha256": m.source.get("weights_sha256"),
        "n_per_word": n,
        "categories": list(categories),
        "seconds": round(time.perf_counter() - t0, 1),
        "canonical": {
            f"{c}/{v}": {"word": TABLES[c][v][0][0], "adherence": float(h.mean())} for (c, v), h in canonical.items()
        },
        "words": rows,
    }


def _word_fields(x: Word) -> dict[str, str]:
    return {"category": x.category, "value": x.value, "word": x.word, "canonical": x.canonical, "set": x.phrasing}


def listing(models: dict[str, Any]) -> dict[str, dict[str, list[str]]]:
    """Per model, the listed words by category: every canonical word, then the listed others in table order."""
    out = {}
    for name, fig in models.items():
        listed = {(r["category"], r["word"]) for r in fig["words"] if r["listed"]}
        out[name] = {
            c: [w for train, held in t.values() for w in (*train, *held) if w == train[0] or (c, w) in listed]
            for c, t in TABLES.items()
        }
    return out


def _pct(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(data: dict[str, Any]) -> str:
    models = data["models"]
    names = list(models)
    sizes = ", ".join(
        f"{k}: {models[k]['n_per_word']}"
        + (
            ""
            if set(models[k].get("categories", TABLES)) == set(TABLES)
            else f" ({' and '.join(models[k]['categories'])} only)"
        )
        for k in names
    )
    lines = [
        "# The words the served models draw",
        "",
        "On "
        + data["machine"]
        + ": "
        + "; ".join(f"`{models[k].get('command', data['command'])}`" for k in names)
        + ".",
        "",
        "Each word against its canonical word on the same one-object scenes and image seeds "
        f"({sizes} scenes a word), prompted in one "
        "fixed form that states colour, shape and the attribute under test ('a crimson square', "
        "'a tiny red square', 'a red square at the upper left', 'a red square on a grey background'), "
        "through each bundle's pipeline (ONNX Runtime fp32, its default steps and guidance) and scored "
        "by the frozen evaluator (adherence: the predicted scene satisfies everything the prompt states). "
        f"ratio = adherence(word) / adherence(canonical), 95% paired bootstrap interval over scenes. A word "
        f"is listed for a model where the ratio is >= {data['threshold']}; `GET /info` lists the words of the "
        f"model it serves by default ({data['default_model']}), and a prompt using another word gets a warning.",
        "",
        "| category | word | means | set | " + " | ".join(f"{k} ratio [95% CI] (adherence)" for k in names) + " |",
        "| --- | --- | --- | --- | " + " | ".join("---" for _ in names) + " |",
    ]
    by_model = {k: {(r["category"], r["word"]): r for r in models[k]["words"]} for k in names}
    for x in alternatives():
        cells = []
        for k in names:
            r = by_model[k].get((x.category, x.word))
            if r is None:
                cells.append("not measured (unlisted)")
                continue
            ci = r["ratio_ci"]
            mark = "**listed**" if r["listed"] else "unlisted"
            cells.append(
                f"{_pct(r['ratio'])} [{_pct(ci[0]) if ci else '-'}, {_pct(ci[1]) if ci else '-'}] "
                f"({r['adherence']:.2f} vs {r['canonical_adherence']:.2f}) {mark}"
            )
        lines.append(f"| {x.category} | {x.word} | {x.canonical} | {x.phrasing} | " + " | ".join(cells) + " |")
    lines += ["", "Listed words by model (canonical words always):", ""]
    for k, cats in listing(models).items():
        extra = [w for c, ws in cats.items() for w in ws if w not in {t[0] for t, _ in TABLES[c].values()}]
        lines.append(f"- {k}: {', '.join(extra) or 'none beyond the canonical words'}")
    lines.append("")
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.machine()} {platform.processor() or ''}".strip() + f", {__import__('os').cpu_count()} CPUs"


def write(data: dict[str, Any], results: Path = RESULTS, package_file: Path = VOCABULARY_FILE) -> None:
    """The results (JSON + Markdown) and the listing the service reads (checked like the service will)."""
    results.mkdir(parents=True, exist_ok=True)
    (results / "vocabulary.json").write_text(json.dumps(data, indent=1) + "\n")
    (results / "vocabulary.md").write_text(markdown(data))
    listed = {
        "threshold": data["threshold"],
        "default_model": data["default_model"],
        "source": str(results / "vocabulary.json"),
        "models": listing(data["models"]),
    }
    parse_measured(listed)
    package_file.write_text(json.dumps(listed, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m scripts.vocabulary", description=__doc__.splitlines()[0])
    p.add_argument("--bundles", type=Path, default=Path("bundles"))
    p.add_argument("--models", nargs="+", default=["mm-alt-k8"])
    p.add_argument("--default-model", default="mm-alt-k8", help="the model the service serves by default")
    p.add_argument("--evaluator", type=Path, default=Path("models/evaluator"))
    p.add_argument("--n", type=int, default=128, help="scenes per word")
    p.add_argument(
        "--categories", nargs="+", choices=list(TABLES), default=list(TABLES), help="measure these words only"
    )
    p.add_argument("--machine", default=None, help="how the results name the machine (default: platform)")
    args = p.parse_args(argv)
    if args.n < 8:
        p.error("--n: at least 8 scenes a word for an interval")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    old_file = RESULTS / "vocabulary.json"
    old = json.loads(old_file.read_text()) if old_file.is_file() else {}
    models = dict(old.get("models", {}))
    for name in args.models:
        bundle = args.bundles / name
        if not (bundle / "manifest.json").is_file():
            p.error(f"--models: no bundle at {bundle}")
        models[name] = measure_model(bundle, args.evaluator, args.n, categories=tuple(args.categories))
        models[name]["command"] = "python -m scripts.vocabulary " + shlex.join(sys.argv[1:] if argv is None else argv)
        data = {
            "version": 1,
            "command": "python -m scripts.vocabulary --models " + " ".join(models),
            "machine": args.machine or machine(),
            "seed": SEED,
            "threshold": THRESHOLD,
            "default_model": args.default_model,
            "models": models,
        }
        write(data)
        log.info("%s measured: %s", name, ", ".join(r["word"] for r in models[name]["words"] if r["listed"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
