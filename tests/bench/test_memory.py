"""`fewstep bench memory`: a serving process that shares identical text encoders holds less."""

import json

from tests.defaults import student

K4 = student(4)  # the default 4-step student


def test_sharing_the_text_encoder_lowers_the_peak_rss_and_the_figures_are_written(default_bundles, tmp_path, run_bench):
    out = tmp_path / "memory.json"
    args = ["--bundles", str(default_bundles), "--models", "teacher", K4, "--repeats", "1", "--out", str(out)]
    assert run_bench(["memory", *args]) == 0
    rows = {(tuple(r["models"]), r["text_encoders"]): r["median_mb"] for r in json.loads(out.read_text())["rows"]}
    alone = rows[(("teacher",), "separate")]
    separate, shared = rows[(("teacher", K4), "separate")], rows[(("teacher", K4), "shared")]
    assert separate - shared > 50, rows  # the second 90 MB session and its arena are not loaded
    assert alone < separate, rows
