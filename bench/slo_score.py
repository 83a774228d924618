"""The scoring pass of `fewstep bench slo`: the adherence of the images actually served, measured.

The simulated servers sleep the cost curve instead of computing, but every answered request says
which model and step count served it, with the trace's prompt (`bench.slo_trace.Prompt`) and seed.
An image of this project is determined by (prompt, seed, model, steps, guidance): each image's noise
comes from its own seed, the same alone or in any batch (`service.pipeline`). So this pass renders
each served image after the run with the serving model's real bundle, through the service's own
`Pipeline.generate`, and scores it with the evaluator exactly as the evaluation does (the
evaluator's predicted scene checked against what the prompt asks, read from the scene record:
`bench.quality.verdicts`). The image a server would have returned is the one scored.

Renders are keyed by (prompt, seed, model, steps, guidance), so servers and loads share them (the
loads of a run replay one stream of prompts and seeds, and most servers serve most requests on the
same model): a run of seven servers at five loads renders each prompt at most once per model.
Where that is still too many images for the machine (the H200 curve's thousands of requests a load
on this CPU), `share` scores a seeded sample of the requests instead: a stable hash of (prompt,
seed) picks them, so the same requests are scored at every server and load and the comparisons
stay paired; the intervals, over the sampled requests, widen accordingly. The
verdicts are kept in `served_scores.json.gz` beside the outcomes, with what they were measured by
(the evaluator's and the bundles' hashes, the backend); a later pass reuses the verdicts of the same
identity and renders only what is missing, and `--report-only` reads them back.

The renderer and the judge are small interfaces (`Renderer`, `Judge`) so that the tests run the
pass over fakes; the real ones load the bundles on ONNX Runtime (or any backend the service has)
and the evaluator in models/evaluator.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

import shapesworld as shapes
from bench.slo_trace import prompt_spec

log = logging.getLogger(__name__)

SCORES = "served_scores.json.gz"  # beside slo.json and outcomes.json.gz
SCORES_VERSION = 1

Key = tuple[int, int, str, int, float]  # (prompt id, seed, model, steps, guidance): one served image


@dataclass(frozen=True)
class ScoreConfig:
    evaluator: str = "models/evaluator"
    backend: str = "onnxruntime"  # the service backend the bundles are rendered on
    device: str | None = None  # with a torch backend: 'cpu' or 'cuda'
    threads: int | None = None  # CPU intra-op threads (None: the backend's default, all cores)
    batch: int = 32  # images per render call
    share: float = 1.0  # the share of the requests scored (`selected`); 1: every one

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError(f"--score-batch must be at least 1, not {self.batch}")
        if not 0 < self.share <= 1:
            raise ValueError(f"--score-share must be in (0, 1], not {self.share}")


@dataclass(frozen=True)
class _Scored:
    """What `bench.quality.verdicts` reads of an evaluation item: the prompt's spec."""

    spec: shapes.PromptSpec


class Renderer(Protocol):
    """uint8 (N, R, R, C) images of `model` for (caption, seed) pairs at `steps` and `guidance`."""

    def __call__(self, model: str, steps: int, guidance: float, prompts: Sequence[tuple[str, int]]) -> np.ndarray: ...


class Judge(Protocol):
    """Per image, whether the evaluator reads back a scene that satisfies its prompt's spec."""

    def __call__(self, images: np.ndarray, specs: Sequence[shapes.PromptSpec]) -> np.ndarray: ...


def outcome_key(o: dict[str, Any]) -> Key | None:
    """The served image of one outcome (None: nothing served, or a run from before prompts had ids)."""
    if o.get("status") != 200 or o.get("model") is None or o.get("prompt_id", -1) < 0 or o.get("guidance") is None:
        return None
    return (int(o["prompt_id"]), int(o["seed"]), str(o["model"]), int(o["steps"]), float(o["guidance"]))


def selected(prompt_id: int, seed: int, share: float) -> bool:
    """Whether the request of (prompt, seed) is among the scored `share`: a stable hash of both, so the
    same requests at every server and load (the k-th arrival has the same prompt and seed at every
    load), whatever order they come in."""
    if share >= 1:
        return True
    digest = hashlib.blake2b(f"{prompt_id}:{seed}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def served_keys(doc: dict[str, Any], share: float = 1.0) -> list[Key]:
    """Every distinct image the run's servers answered with among the scored `share` of the requests,
    over all loads (sorted: a stable order)."""
    keys = {k for e in doc["loads"] for s in e["servers"].values() for o in s["outcomes"] if (k := outcome_key(o))}
    return sorted(k for k in keys if selected(k[0], k[1], share))


def captions(doc: dict[str, Any]) -> tuple[int, dict[int, str]]:
    """The pools' seed and {prompt id: caption} the run recorded (JSON keeps the ids as strings)."""
    prompts = doc.get("prompts")
    if not prompts:
        raise ValueError("this run recorded no prompts (it predates the scoring pass): run the benchmark again")
    return int(prompts["seed"]), {int(i): c for i, c in prompts["captions"].items()}


# --- the cache of verdicts -----------------------------------------------------------------------


def save_scores(out: Path, identity: dict[str, Any], verdicts: dict[Key, bool], stats: dict[str, Any]) -> Path:
    """The verdicts with what measured them; written whole each time (a pass cut short keeps its renders)."""
    doc = {
        "version": SCORES_VERSION,
        "identity": identity,
        "stats": stats,
        "verdicts": [[*k, int(v)] for k, v in sorted(verdicts.items())],
    }
    path = out / SCORES
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(gzip.compress(json.dumps(doc).encode()))
    tmp.replace(path)
    return path


def load_scores(out: Path) -> dict[str, Any] | None:
    """{"identity", "stats", "verdicts": {key: bool}} of a run's scoring pass, or None if it has none."""
    path = out / SCORES
    if not path.is_file():
        return None
    doc = json.loads(gzip.decompress(path.read_bytes()))
    if doc.get("version") != SCORES_VERSION:
        raise ValueError(f"{path}: scores version {doc.get('version')}, this code reads {SCORES_VERSION}")
    verdicts = {(int(p), int(s), str(m), int(k), float(g)): bool(v) for p, s, m, k, g, v in doc["verdicts"]}
    return {**doc, "verdicts": verdicts}


# --- the pass ------------------------------------------------------------------------------------


def _batches(keys: Sequence[Key], batch: int) -> Iterable[tuple[tuple[str, int, float], list[Key]]]:
    """Keys grouped by (model, steps, guidance), in chunks of `batch`: one render call each."""
    groups: dict[tuple[str, int, float], list[Key]] = defaultdict(list)
    for k in keys:
        groups[(k[2], k[3], k[4])].append(k)
    for group, members in sorted(groups.items()):
        for i in range(0, len(members), batch):
            yield group, members[i : i + batch]


def score_served(
    doc: dict[str, Any],
    render: Renderer,
    judge: Judge,
    *,
    known: dict[Key, bool] | None = None,
    batch: int = 32,
    share: float = 1.0,
    checkpoint: Any = None,
    progress: bool = True,
) -> tuple[dict[Key, bool], dict[str, Any]]:
    """Render and judge every served image of `doc` (of the requests in `share`) not in `known`;
    ({key: verdict}, stats).

    `checkpoint(verdicts)`, if given, is called after every batch (the caller saves them)."""
    from tqdm import tqdm

    seed, text = captions(doc)
    keys = served_keys(doc, share)
    wanted = set(keys)
    verdicts = {k: v for k, v in (known or {}).items() if k in wanted}
    missing = [k for k in keys if k not in verdicts]
    specs: dict[int, shapes.PromptSpec] = {}
    for pid in sorted({k[0] for k in missing}):
        if pid not in text:
            raise ValueError(f"prompt {pid} was served but the run recorded no caption for it")
        specs[pid] = prompt_spec(seed, pid, text[pid])
    log.info("scoring %d served images (%d reused, %d to render)", len(keys), len(keys) - len(missing), len(missing))
    t0 = time.perf_counter()
    bar = tqdm(total=len(missing), disable=not progress, desc="served images")
    for (model, steps, guidance), chunk in _batches(missing, batch):
        images = render(model, steps, guidance, [(text[k[0]], k[1]) for k in chunk])
        if len(images) != len(chunk):
            raise RuntimeError(f"the renderer returned {len(images)} images for {len(chunk)} requests")
        ok = np.asarray(judge(images, [specs[k[0]] for k in chunk]), dtype=bool)
        verdicts.update(zip(chunk, ok.tolist(), strict=True))
        bar.update(len(chunk))
        if checkpoint is not None:
            checkpoint(verdicts)
    bar.close()
    stats = {
        "images": len(keys),
        "rendered": len(missing),
        "reused": len(keys) - len(missing),
        "seconds": round(time.perf_counter() - t0, 1),
        "share": share,
        "by_option": dict(sorted(_count_options(keys).items())),
    }
    return verdicts, stats


def _count_options(keys: Iterable[Key]) -> dict[str, int]:
    out: dict[str, int] = defaultdict(int)
    for k in keys:
        out[f"{k[2]}@{k[3]}"] += 1
    return out


# --- the real renderer and judge -----------------------------------------------------------------


class BundleRenderer:
    """The family's bundles through the service's pipeline (`service.loader.load_pipeline`,
    `Pipeline.generate`): the images the service would have returned."""

    def __init__(self, bundles: Sequence[str], cfg: ScoreConfig) -> None:
        from service.backends.base import BackendSettings
        from service.loader import load_pipeline

        fields: dict[str, Any] = {"kind": cfg.backend}
        if cfg.device:
            fields["device"] = cfg.device
        if cfg.threads:
            fields["threads"] = cfg.threads
        settings = BackendSettings(**fields)
        shared: dict = {}
        self.pipelines = {}
        for b in bundles:
            p = load_pipeline(b, settings, warmup=(), shared_text=shared)
            self.pipelines[p.name] = p

    def __call__(self, model: str, steps: int, guidance: float, prompts: Sequence[tuple[str, int]]) -> np.ndarray:
        from service.pipeline import ImageJob

        if model not in self.pipelines:
            raise ValueError(
                f"a request was served by {model!r}, which is not among the bundles {sorted(self.pipelines)}"
            )
        return self.pipelines[model].generate([ImageJob(c, s, steps, guidance) for c, s in prompts])


class EvaluatorJudge:
    """The learned evaluator (models/evaluator), as `fewstep eval` and `fewstep bench quality` use it."""

    def __init__(self, path: str | Path) -> None:
        from distill.evaluation.evaluator import load_evaluator

        self.model, self.manifest = load_evaluator(path)

    def __call__(self, images: np.ndarray, specs: Sequence[shapes.PromptSpec]) -> np.ndarray:
        from bench.quality import verdicts

        return verdicts(self.model, images, [_Scored(s) for s in specs])


# The parts of a bundle's manifest that determine its images: the sha256 of every file, the sampler,
# the step plans, the guidance, the text encoder. Not its evaluation rows or later records (a
# precision check adds one), which change no image.
IMAGE_FIELDS = (
    "name", "resolution", "channels", "sampler", "steps", "guidance", "text", "graphs", "precision", "files",
)  # fmt: skip


def bundle_identity(bundle: str | Path) -> str:
    """sha256 over `IMAGE_FIELDS` of the bundle's manifest."""
    manifest = json.loads((Path(bundle) / "manifest.json").read_text())
    fields = {k: manifest.get(k) for k in IMAGE_FIELDS}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def identity(doc: dict[str, Any], cfg: ScoreConfig) -> dict[str, Any]:
    """What the verdicts depend on besides their keys: the evaluator's weights, each bundle's
    image-determining manifest fields (`bundle_identity`), the backend, the prompts' seed."""
    from fewstep.bundle import sha256_file

    return {
        "evaluator_sha256": sha256_file(Path(cfg.evaluator) / "weights.safetensors"),
        "bundles": {Path(b).name: bundle_identity(b) for b in doc["config"]["bundles"]},
        "backend": cfg.backend,
        "device": cfg.device,
        "prompt_seed": captions(doc)[0],
    }


def score_run(doc: dict[str, Any], out: Path, cfg: ScoreConfig) -> dict[str, Any]:
    """The scoring pass over a saved run: verdicts of the same identity reused, the rest rendered on
    the bundles and judged by the evaluator; written to `served_scores.json.gz`. Returns what
    `load_scores` returns."""
    ident = identity(doc, cfg)
    previous = load_scores(out)
    known = previous["verdicts"] if previous and previous["identity"] == ident else {}
    if previous and not known:
        aside = out / f"{SCORES}.previous"
        (out / SCORES).replace(aside)
        log.warning("%s was measured by other bundles, evaluator or backend: kept as %s, scoring again", SCORES, aside)
    renderer = BundleRenderer(doc["config"]["bundles"], cfg)
    judge = EvaluatorJudge(cfg.evaluator)

    def checkpoint(verdicts: dict[Key, bool]) -> None:
        save_scores(out, ident, verdicts, {"partial": True, "share": cfg.share})

    verdicts, stats = score_served(
        doc, renderer, judge, known=known, batch=cfg.batch, share=cfg.share, checkpoint=checkpoint
    )
    stats |= {"config": asdict(cfg), "evaluator_accuracy": judge.manifest.get("accuracy")}
    save_scores(out, ident, verdicts, stats)
    return {"identity": ident, "stats": stats, "verdicts": verdicts}
