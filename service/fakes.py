"""Fakes of the backend boundary, and a real `Pipeline` over them, for what runs above it
(the pipeline, engine and HTTP tests; `bench.sim_server`'s simulated denoiser).

It sits beside `service.loader`, not among the backends: like the loader it builds pipelines, so
it imports `service.pipeline` and `service.text`, both below it, and nothing in `service` imports
it (an import-linter contract keeps `service.backends` from importing anything above it).

The fake denoiser is a cheap deterministic function of (z, t, text, w), row by row, so a batch's
images do not depend on their neighbours, with an optional sleep per call to model compute time
(batching and load tests need a cost that grows slowly with batch size, as on a real backend).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Sequence

import numpy as np

from fewstep.bundle import (
    GuidanceSpec,
    Manifest,
    PrecisionCheck,
    TextSpec,
    denoiser_graph,
    step_schedules,
    text_encoder_graph,
)
from service.pipeline import Pipeline
from service.text import PromptEncoder


class FakeTokenizer:
    def __init__(self, max_tokens: int = 8, vocab: int = 97) -> None:
        self.max_tokens, self.vocab = max_tokens, vocab

    def __call__(self, prompts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.zeros((len(prompts), self.max_tokens), np.int64)
        mask = np.zeros_like(ids)
        for i, p in enumerate(prompts):
            words = [1 + zlib.crc32(w.encode()) % (self.vocab - 1) for w in p.split()][: self.max_tokens]
            ids[i, : len(words)] = words
            mask[i, : len(words)] = 1
        return ids, mask


class FakeTextEncoder:
    def __init__(self, vocab: int = 97, hidden: int = 4) -> None:
        self.table = np.random.default_rng(0).standard_normal((vocab, hidden)).astype(np.float32)
        self.calls = 0

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.table[input_ids] * attention_mask[..., None]


class FakeDenoiser:
    """x_hat = tanh(z / 2 + text mean [+ w / 10] [+ d]) per row, sleeping `delay_s + per_image_s * B`."""

    def __init__(self, max_batch: int = 64, delay_s: float = 0.0, per_image_s: float = 0.0) -> None:
        self.max_batch, self.delay_s, self.per_image_s = max_batch, delay_s, per_image_s
        self.batch_sizes: list[int] = []

    def __call__(self, z, t, states, mask, w=None, d=None) -> np.ndarray:
        b = z.shape[0]
        if b > self.max_batch:
            raise ValueError(f"batch {b} over max_batch {self.max_batch}")
        self.batch_sizes.append(b)
        if self.delay_s or self.per_image_s:
            time.sleep(self.delay_s + self.per_image_s * b)
        m = mask[..., None].astype(np.float32)
        text = (states * m).sum((1, 2)) / np.maximum(m.sum((1, 2)), 1.0)
        shift = text + (0.0 if w is None else w / 10.0) + (0.0 if d is None else d)
        return np.tanh(z / 2 + shift[:, None, None, None] * (1.0 - t[:, None, None, None])).astype(np.float32)


def fake_manifest(
    name: str = "fake",
    resolution: int = 8,
    steps: Sequence[int] = (4, 8),
    default_steps: int | None = None,
    network_input: bool = False,
    max_tokens: int = 8,
    hidden: int = 4,
    evaluation: dict | None = None,
    reduced_precision: Sequence[PrecisionCheck] = (),
) -> Manifest:
    """A valid manifest of no real bundle; `evaluation` gives it evaluation rows (the latency
    controller's quality per prompt class: `evaluation_row`), `reduced_precision` measurements of
    reduced-precision paths (`precision_check`)."""
    return Manifest(
        name=name,
        resolution=resolution,
        steps=step_schedules(list(steps)),
        default_steps=default_steps or min(steps),
        guidance=GuidanceSpec(min=1.0, max=8.0, default=3.0, network_input=network_input),
        text=TextSpec(name="fake", max_tokens=max_tokens, hidden=hidden, tokenizer_files=()),
        graphs={
            "text_encoder": text_encoder_graph(max_tokens, hidden),
            "denoiser": denoiser_graph(resolution, 3, max_tokens, hidden, network_input),
        },
        evaluation=evaluation or {},
        reduced_precision={c.label: c for c in reduced_precision},
    )


def precision_check(
    label: str = "openvino-bf16", drop: float = 0.0, pixels: float = 1.0, denoiser_sha256: str = ""
) -> PrecisionCheck:
    """A measurement of the path `label` whose adherence dropped by `drop` (passed per the rule), of
    the denoiser graph `denoiser_sha256` (a fake manifest hashes no files: "")."""
    backend, precision = label.rsplit("-", 1)
    ci = (drop - 0.01, drop + 0.01)
    fields = dict(
        backend=backend,
        precision=precision,
        reference=f"{backend}-fp32",
        n_images=400,
        steps=4,
        guidance=3.0,
        prompts="fake",
        denoiser_sha256=denoiser_sha256,
        pixel_mean_abs=pixels,
        pixel_max_abs=10 * pixels,
        images_moved=0.0,
        adherence_reference=0.9,
        adherence=0.9 - drop,
        adherence_drop=drop,
        adherence_drop_ci=ci,
    )
    probe = PrecisionCheck.model_construct(**fields, passed=False)
    return PrecisionCheck(**fields, passed=probe.meets_threshold())


def evaluation_row(steps: int, one_object: float, two_objects: float, guidance: float = 3.0) -> dict:
    """One evaluation row as `fewstep eval` writes it, reduced to what the controller reads."""
    overall = (one_object + two_objects) / 2
    return {
        "sampler": "ancestral",
        "steps": steps,
        "guidance": guidance,
        "adherence": {"overall": overall, "one_object": one_object, "two_objects": two_objects},
    }


def fake_pipeline(name: str = "fake", denoiser: FakeDenoiser | None = None, **manifest_kw) -> Pipeline:
    """A real `Pipeline` over fake backends: what engine and HTTP tests run against."""
    m = fake_manifest(name, **manifest_kw)
    prompts = PromptEncoder(FakeTokenizer(m.text.max_tokens), FakeTextEncoder(hidden=m.text.hidden))
    return Pipeline(m, prompts, denoiser or FakeDenoiser(), backend="fake")
