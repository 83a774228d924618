"""The GPU check's CPU dry run: every section runs or reports itself skipped, and a table is written."""

import json

import pytest

pytest.importorskip("torch")


def test_cpu_dry_run_on_a_bundle(tiny_bundle, tmp_path, run_bench):
    args = ["--batches", "1", "2", "--steps", "2", "--repeats", "1", "--skip", "compile"]
    rc = run_bench(["gpu", "--model", str(tiny_bundle), "--device", "cpu", "--out", str(tmp_path), *args])
    assert rc == 0
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["parity"]["pass"] and doc["parity"]["denoiser_max_abs"] == 0.0
    modes = {(r["mode"], r["precision"]) for r in doc["rows"] if "images_per_s" in r}
    assert {("torch eager", "fp32"), ("torch eager", "bf16"), ("ort CPU", "fp32")} <= modes
    notes = " ".join(doc["notes"])
    assert "CUDA-graph replay: skipped" in notes and "native TensorRT: skipped" in notes
    assert "| torch eager | fp32 | 2 | 2 |" in (tmp_path / "gpu_check.md").read_text()


def test_packed_model_layout(tiny_bundle):
    from bench.gpu import load_model

    packed = tiny_bundle.parent / "models" / "tiny"
    cfg, weights, _onnx, tokens = load_model(packed)
    assert weights.is_file() and tokens == 16 and cfg.resolution == 16
    with pytest.raises(FileNotFoundError):
        load_model(tiny_bundle.parent)


def test_precisions_limit_what_is_timed(tiny_bundle, tmp_path):
    """`--precisions fp32` times eager fp32 only (a short lease spends its minutes on graph replay)."""
    from bench.gpu import GpuCheckConfig, run_gpu_check

    cfg = GpuCheckConfig(
        model=str(tiny_bundle), device="cpu", out=str(tmp_path), batches=(1,), steps=(2,), repeats=1,
        skip=("compile", "ort", "trt"), precisions=("fp32",),
    )  # fmt: skip
    assert run_gpu_check(cfg) == 0
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    torch_rows = {(r["mode"], r["precision"]) for r in doc["rows"] if r["mode"].startswith("torch")}
    assert torch_rows == {("torch eager", "fp32")}


def test_without_cuda_nothing_is_checked(tmp_path):
    import torch

    from bench.gpu import GpuCheckConfig, run_gpu_check

    if torch.cuda.is_available():
        pytest.skip("CUDA is here")
    assert run_gpu_check(GpuCheckConfig(device="cuda", out=str(tmp_path))) == 1
    assert not (tmp_path / "gpu_check.json").exists()
