"""The loss plot (distill.kit.plots): a PNG from metrics.jsonl, nothing without rows."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from distill.kit.plots import plot_loss


def test_a_png_of_the_loss_against_step(tmp_path):
    pytest.importorskip("matplotlib")
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 50)))
    out = plot_loss(metrics, tmp_path / "loss.png")
    assert out == tmp_path / "loss.png"
    assert Image.open(out).format == "PNG" and Image.open(out).size == (600, 350)


def test_no_metrics_or_no_rows_is_no_plot(tmp_path):
    assert plot_loss(tmp_path / "missing.jsonl", tmp_path / "a.png") is None
    empty = tmp_path / "metrics.jsonl"
    empty.write_text("\n")
    assert plot_loss(empty, tmp_path / "b.png") is None
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()
