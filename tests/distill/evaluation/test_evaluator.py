"""The attribute evaluator (distill.evaluation.evaluator): the committed model's accuracy and what it reads."""

from __future__ import annotations

import json

import shapesworld as shapes
from distill.evaluation.evaluator import attribute_accuracy, predict
from tests.distill.conftest import EVALUATOR, N


def test_committed_evaluator_meets_its_accuracy_bar():
    manifest = json.loads((EVALUATOR / "manifest.json").read_text())
    for attr in ("background", "occupancy", "colour", "shape", "size"):
        assert manifest["accuracy"][attr] >= 0.99, (attr, manifest["accuracy"])


def test_evaluator_reads_fresh_renders(evaluator, items, reference):
    pred, feats = predict(evaluator, reference)
    acc = attribute_accuracy(pred, [e.item.scene for e in items])
    assert min(acc[k] for k in ("background", "occupancy", "colour", "shape", "size")) >= 0.98, acc
    assert feats.shape == (N, evaluator.cfg.feature_dim)


def test_attribute_accuracy_counts_each_attribute_of_the_objects_it_compares():
    red = shapes.ShapeObject("red", "circle", "small", 0)
    truth = [shapes.Scene("white", (red,)), shapes.Scene("black", (red,))]
    assert attribute_accuracy(truth, truth)["colour"] == 1.0
    wrong_colour = [shapes.Scene("white", (shapes.ShapeObject("blue", "circle", "small", 0),)), truth[1]]
    acc = attribute_accuracy(wrong_colour, truth)
    assert (acc["colour"], acc["scene"], acc["shape"], acc["background"]) == (0.5, 0.5, 1.0, 1.0)
    wrong_background = [truth[0], shapes.Scene("gray", (red,))]
    acc = attribute_accuracy(wrong_background, truth)
    assert acc["background"] == 0.5 and acc["colour"] == 1.0
