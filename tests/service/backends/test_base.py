"""The backend boundary (service.backends.base): the settings' candidate names, 'backend-precision'
paths and batches cut to a backend's max_batch (the contract every backend passes is in
conftest.py, run by each backend's own test file)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from service.backends.base import BackendSettings, chunked, split_path


def test_candidate_names_are_validated():
    assert BackendSettings(auto_candidates=("openvino-bf16",)).auto_candidates == ("openvino-bf16",)
    with pytest.raises(ValidationError, match="not 'backend-precision'"):
        BackendSettings(auto_candidates=("openvino-bf8",))
    with pytest.raises(ValidationError, match="listed twice"):
        BackendSettings(auto_candidates=("openvino-bf16", "openvino-bf16"))
    with pytest.raises(ValidationError):
        BackendSettings(auto_candidates=())


def test_a_path_name_splits_at_its_last_dash():
    assert split_path("openvino-bf16") == ("openvino", "bf16")
    assert split_path("onnxruntime-fp32") == ("onnxruntime", "fp32")
    for bad in ("openvino", "openvino-", "-fp32", "cuda-fp32", "torch-fp64"):
        with pytest.raises(ValueError, match=r"not 'backend-precision'.*onnxruntime.*fp32"):
            split_path(bad)


def test_chunked_calls_at_most_max_batch_rows_and_passes_none_through():
    calls = []

    def fn(a, b, w):
        calls.append((a.shape[0], w is None))
        return a * 2 + b

    a, b = np.arange(7.0), np.ones(7)
    np.testing.assert_array_equal(chunked(fn, 3, a, b, None), a * 2 + 1)
    assert calls == [(3, True), (3, True), (1, True)]
    calls.clear()
    np.testing.assert_array_equal(chunked(fn, 8, a, b, None), a * 2 + 1)
    assert calls == [(7, True)]  # small enough: one call, no copies
    calls.clear()
    chunked(lambda w, a, b: fn(a, b, w), 4, None, a, b)  # the row count comes from the first array given
    assert calls == [(4, True), (3, True)]
