"""The benchmarked server's side (bench.server): batch histograms read from /metrics."""

from __future__ import annotations

import pytest

from bench.server import histogram_delta


def test_batch_histogram_deltas():
    before = {"m": {"1.0": 2, "2.0": 2, "4.0": 3, "+Inf": 3, "sum": 5, "count": 3}}
    after = {"m": {"1.0": 4, "2.0": 5, "4.0": 8, "+Inf": 8, "sum": 18, "count": 8}}
    d = histogram_delta(before, after)["m"]
    assert d["batches"] == 5 and d["mean_images"] == pytest.approx(13 / 5)
    assert d["by_le"] == {"1.0": 2, "2.0": 1, "4.0": 2}


def test_the_batch_histogram_is_read_per_model_from_a_scrape():
    text = "\n".join(
        [
            "# HELP fewstep_batch_size_images images per batch",
            "# TYPE fewstep_batch_size_images histogram",
            'fewstep_batch_size_images_bucket{le="1.0",model="a"} 2.0',
            'fewstep_batch_size_images_bucket{le="4.0",model="a"} 5.0',
            'fewstep_batch_size_images_bucket{le="+Inf",model="a"} 5.0',
            'fewstep_batch_size_images_sum{model="a"} 11.0',
            'fewstep_batch_size_images_count{model="a"} 5.0',
            "# HELP other_total something else",
            "# TYPE other_total counter",
            "other_total 3.0",
            "",
        ]
    )
    from bench.server import batch_histogram

    assert batch_histogram(text) == {"a": {"1.0": 2.0, "4.0": 5.0, "+Inf": 5.0, "sum": 11.0, "count": 5.0}}


def test_profiled_stacks_are_shared_out_by_category():
    from bench.server import categorize, summarize_stacks

    graph = "uvicorn/main.py:run;service/engine/runner.py:run;onnxruntime/session.py:run 6"
    maths = "threading.py:run;service/engine/runner.py:run;fewstep/sampler.py:step 3"
    png = "starlette/routing.py:app;service/api/encode.py:encode_image;PIL/Image.py:save 1"
    assert categorize(graph.split()[0]) == "denoiser (ORT run)"  # whatever called it
    assert categorize(maths.split()[0]) == "sampler maths (numpy)"  # the innermost matching frame
    assert categorize("a.py:f;b.py:g") == "other"
    s = summarize_stacks("\n".join([graph, maths, png, "garbage line"]), top=2)
    assert s["samples"] == 10
    assert s["by_category"] == pytest.approx(
        {"denoiser (ORT run)": 0.6, "sampler maths (numpy)": 0.3, "image encoding (PNG)": 0.1}
    )
    assert s["top_own"] == [("onnxruntime/session.py:run", 0.6), ("fewstep/sampler.py:step", 0.3)]
    assert summarize_stacks("") == {"samples": 0, "by_category": {}, "top_own": []}
