"""Fixtures and helpers the distill tests share: the committed evaluator with a fixed evaluation
set and its reference renders, and the op histogram of an exported graph."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EVALUATOR = ROOT / "models" / "evaluator"
N = 400  # images in the `items` and `reference` fixtures


@pytest.fixture(scope="module")
def evaluator():
    from distill.evaluation.evaluator import load_evaluator

    model, _ = load_evaluator(EVALUATOR)
    return model


@pytest.fixture(scope="module")
def items():
    from distill.evaluation.evaluate import eval_set

    return eval_set(N)


@pytest.fixture(scope="module")
def reference(items):
    from distill.evaluation.evaluate import reference_images

    return reference_images(items, 32)


def op_histogram(path) -> dict[str, int]:
    import collections

    import onnx

    return dict(collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node))
