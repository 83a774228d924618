"""The sampler benchmark on a tiny real bundle: rows, ratios, tables, reduced-precision paths."""

import json

import pytest

pytest.importorskip("torch")

from bench.sampler import SamplerBenchConfig, markdown, run_sampler_bench, write_results


def test_runner_rows_and_tables(tiny_bundle, tmp_path):
    lines = []
    cfg = SamplerBenchConfig(
        tiny_bundle,
        ("onnxruntime-fp32", "torch-fp32"),
        batches=(1, 3),
        steps=(2, 3),
        min_repeats=2,
        min_cell_seconds=0.0,
        peak_size=64,
    )
    doc = run_sampler_bench(cfg, report=lines.append)
    rows = doc["rows"]
    assert len(rows) == 3 * 2 * 2  # two paths and the identity denoiser, 2 batches x 2 K
    for r in rows:
        assert r["images_per_s"] > 0 and r["repeats"] == 2 and len(r["times_s"]) == 2
        assert r["evals_per_image"] == 2 * r["steps"]  # a teacher: guidance doubles the batch
        if r["path"] != "sampler-only":
            assert r["gflops"] == pytest.approx(r["images_per_s"] * r["flops_per_image"] / 1e9)
            assert 0 < r["frac_bf16_peak"]
    assert doc["flops_per_eval_per_image"]["per_image"] > 0
    assert len(doc["matmul_peak_gflops"]["runs"]["fp32"]) == 2  # start and end of the run
    ratios = doc["ratios"]["ort_vs_torch_fp32"]
    assert {(x["steps"], x["batch"]) for x in ratios} == {(2, 1), (2, 3), (3, 1), (3, 3)}
    assert all(x["path"] != "sampler-only" for x in doc["ratios"]["fastest_at_max_batch"])
    md = markdown(doc)
    assert "| onnxruntime-fp32 |" in md and "**K = 3**" in md
    j, m = write_results(doc, tmp_path / "s.json")
    assert json.loads(j.read_text())["rows"][0]["path"] == rows[0]["path"]
    assert m.read_text() == md
