"""The offline side's evaluation set and evaluator, for tests that score served images.

The service's tests (`tests/service`) do not import `distill`, so that their suite runs without
torch; the end-to-end test still checks what the served images show, through these helpers.
Each skips (with its reason) where what it needs is missing: `distill` for the evaluation set,
torch and the committed evaluator (`models/evaluator`) for scoring.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
EVALUATOR_DIR = ROOT / "models" / "evaluator"


def evaluation_items(n: int) -> list[Any]:
    """The first `n` in-distribution evaluation items (caption, seed) of the 500-item evaluation set."""
    eval_set = pytest.importorskip("distill.evaluation.eval_set", reason="the evaluation set is the offline side's")
    return eval_set.eval_set(500)[:n]


def evaluation_set_version() -> int:
    eval_set = pytest.importorskip("distill.evaluation.eval_set", reason="the evaluation set is the offline side's")
    return int(eval_set.EVAL_SET_VERSION)


def _predict(images: np.ndarray) -> list[Any]:
    """The committed evaluator's scenes for uint8 (N, R, R, 3) images."""
    pytest.importorskip("torch", reason="the evaluator runs on torch")
    if not (EVALUATOR_DIR / "manifest.json").is_file():
        pytest.skip("no committed evaluator in models/evaluator")
    from distill.evaluation.evaluator import load_evaluator, predict

    evaluator, _ = load_evaluator(EVALUATOR_DIR)
    predicted, _ = predict(evaluator, images)
    return predicted


def served_adherence(images: np.ndarray, n: int) -> float:
    """Overall adherence of `images` drawn for the first `n` evaluation items (the evaluation's metric)."""
    predicted = _predict(images)
    from distill.evaluation.evaluate import adherence

    return float(adherence(predicted, evaluation_items(n))["overall"])


def predicted_scenes(images: np.ndarray) -> list[Any]:
    """What the evaluator sees in each image (`shapesworld` scenes)."""
    return _predict(images)
