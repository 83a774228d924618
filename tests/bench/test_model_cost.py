import json

import pytest

from tests.conftest import make_packed_model


@pytest.mark.slow  # tens of seconds of export or training: `make test-slow`
def test_costs_every_model_in_interleaved_rounds(tmp_path, tiny_bert_dir, run_bench):
    small = make_packed_model(tmp_path / "small" / "model", tiny_bert_dir)
    wide = make_packed_model(tmp_path / "wide" / "model", tiny_bert_dir, overrides=("model.base_channels=32",))
    out = tmp_path / "cost.json"
    assert run_bench(["model-cost", str(small), str(wide), "--batch", "4", "--rounds", "3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["models"]
    assert set(rows) == {"small", "wide"}
    for r in rows.values():
        assert len(r["times_ms"]) == 3 and r["ort_ms_per_eval"] > 0 and r["onnx_parity"] < 1e-4
    assert rows["wide"]["params"] > 2 * rows["small"]["params"]
    assert rows["wide"]["gflop_per_eval"] > 2 * rows["small"]["gflop_per_eval"]
    # nothing is written beside the weights: the candidates' graphs are measurements
    assert not (small / "denoiser.onnx").exists()
