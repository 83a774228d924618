"""The quality row: distill.evaluation.evaluate's schema plus backend/precision, noise yardsticks, paired deltas."""

import json
import math

import pytest

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_evaluator(tmp_path_factory):
    """A random evaluator at the tiny bundle's 16 px (the committed one reads 32 px)."""
    import torch
    from safetensors.torch import save_file

    from distill.evaluation.evaluator import Evaluator, EvaluatorConfig

    path = tmp_path_factory.mktemp("evaluator")
    cfg = EvaluatorConfig(resolution=16, width=8, feature_dim=16)
    torch.manual_seed(0)
    save_file(Evaluator(cfg).state_dict(), path / "weights.safetensors")
    (path / "manifest.json").write_text(json.dumps({"config": cfg.model_dump(), "accuracy": {"all": 0.0}}))
    return path


def test_quality_rows_fp32_then_bf16(tiny_bundle, tiny_evaluator, tmp_path):
    from bench.quality import QualityBenchConfig, quality_row

    kw = dict(
        bundle=tiny_bundle,
        backend="torch",
        n_images=10,
        steps=2,
        guidance=3.0,
        out_dir=tmp_path / "rows",
        images_dir=tmp_path / "images",
        evaluator_path=tiny_evaluator,
        batch_size=4,
    )
    fp32 = quality_row(QualityBenchConfig(precision="fp32", **kw))
    keys = {
        "name", "model", "sampler", "steps", "guidance", "nfe", "nfe_per_step", "n_images", "fd", "kid", "kid_std",
        "precision", "recall", "adherence", "free_attribute_tv", "seconds_per_image", "evaluator_accuracy",
        "eval_seed", "machine", "git_sha",
    }  # fmt: skip
    assert keys <= set(fp32)
    assert fp32["backend"] == "torch" and fp32["compute_precision"] == "fp32"
    assert 0 <= fp32["precision"] <= 1  # the evaluator's precision, as in distill.evaluation.evaluate rows
    assert fp32["nfe"] == 4 and fp32["n_images"] == 10
    # resampling 10 different images moves the FD: a spread of exactly 0 (or NaN) means no resampling
    assert math.isfinite(fp32["fd_bootstrap_sd"]) and fp32["fd_bootstrap_sd"] > 0
    assert (tmp_path / "rows" / f"{fp32['name']}.json").is_file()
    bf16 = quality_row(QualityBenchConfig(precision="bf16", **kw))
    v = bf16["vs_reference"]
    assert v["reference"] == fp32["name"]
    assert v["fd_delta"] == pytest.approx(bf16["fd"] - fp32["fd"])
    assert 0 <= v["same_verdict_share"] <= 1 and 0 <= v["max_abs_255"] <= 255
    # each row carries its intervals and a per-image sidecar, so the two paths pair in `eval compare`
    assert fp32["fd_ci"][0] <= fp32["fd"] <= fp32["fd_ci"][1]
    from distill.evaluation.compare import compare, load_side

    a = load_side(tmp_path / "rows" / f"{fp32['name']}.json", progress=False)
    b = load_side(tmp_path / "rows" / f"{bf16['name']}.json", progress=False)
    out = compare(a, b, out_dir=tmp_path / "compare", name="fp32-vs-bf16", resamples=50)
    assert out["fd"]["diff"] == pytest.approx(bf16["fd"] - fp32["fd"], rel=1e-4, abs=1e-4)
    assert out["fd"]["ci"][0] <= out["fd"]["diff"] <= out["fd"]["ci"][1]


def test_ort_int8_goes_through_the_service_pipeline(tiny_bundle):
    import numpy as np

    from bench.quality import load_bench_pipeline
    from service.pipeline import ImageJob

    jobs = [ImageJob("a red circle", i, 2, 3.0) for i in range(3)]
    fp32 = load_bench_pipeline(tiny_bundle, "onnxruntime", "fp32").generate(jobs)
    int8 = load_bench_pipeline(tiny_bundle, "onnxruntime", "int8")
    assert list((tiny_bundle.parent / ".cache" / "bench").glob("*-int8.onnx"))
    images = int8.generate(jobs)
    assert images.shape == fp32.shape and images.dtype == np.uint8
