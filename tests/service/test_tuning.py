"""The tuning cache: measurements kept per machine and key, refreshed on demand, and never a reason
for the service not to start."""

from __future__ import annotations

import json
import logging

import pytest

from service.tuning import TuningCache, bundle_identity, machine_fingerprint

MACHINE = {"cpu": "test cpu", "cpus": 2, "cpu_quota": None, "arch": "x86_64", "runtimes": {"onnxruntime": "1"}}
FIELDS = {"bundle": "abc", "path": "openvino-bf16", "steps": 4}


def cache(path, **kw) -> TuningCache:
    return TuningCache(path, machine=dict(MACHINE), **kw)


def test_a_kept_measurement_is_read_back_by_a_new_start(tmp_path):
    path = tmp_path / "sub" / "tuning.json"
    first = cache(path)
    assert first.get("batch_profile", FIELDS) is None
    first.put("batch_profile", FIELDS, {"seconds": {"1": 0.01, "2": 0.015}})
    again = cache(path)  # another process, the same machine
    assert again.get("batch_profile", FIELDS) == {"seconds": {"1": 0.01, "2": 0.015}}
    assert [p.name for p in path.parent.iterdir()] == ["tuning.json"]  # no temporary file left behind
    doc = json.loads(path.read_text())
    (entry,) = doc["entries"].values()
    assert entry["machine"] == MACHINE and entry["fields"] == FIELDS and entry["what"] == "batch_profile"


@pytest.mark.parametrize(
    "change",
    [
        lambda c, f: ("backend", f),  # another kind of measurement
        lambda c, f: ("batch_profile", {**f, "steps": 8}),  # another setting of it
        lambda c, f: ("batch_profile", {**f, "bundle": "def"}),  # other weights
    ],
)
def test_a_different_key_misses(tmp_path, change):
    c = cache(tmp_path / "t.json")
    c.put("batch_profile", FIELDS, {"seconds": {"1": 0.01}})
    what, fields = change(c, FIELDS)
    assert c.get(what, fields) is None


def test_another_machine_or_runtime_misses(tmp_path):
    path = tmp_path / "t.json"
    cache(path).put("batch_profile", FIELDS, {"seconds": {"1": 0.01}})
    updates = ({"cpus": 4}, {"cpu": "other cpu"}, {"cpu_quota": "100000 100000"}, {"runtimes": {"onnxruntime": "2"}})
    for update in updates:
        assert TuningCache(path, machine={**MACHINE, **update}).get("batch_profile", FIELDS) is None


def test_refresh_ignores_what_is_kept_and_overwrites_it(tmp_path):
    path = tmp_path / "t.json"
    cache(path).put("batch_profile", FIELDS, {"seconds": {"1": 0.01}})
    fresh = cache(path, refresh=True)
    assert fresh.get("batch_profile", FIELDS) is None
    fresh.put("batch_profile", FIELDS, {"seconds": {"1": 0.02}})
    assert cache(path).get("batch_profile", FIELDS) == {"seconds": {"1": 0.02}}
    assert len(json.loads(path.read_text())["entries"]) == 1


def test_a_corrupt_cache_is_logged_measured_afresh_and_rewritten(tmp_path, caplog):
    path = tmp_path / "t.json"
    path.write_text("{not json")
    c = cache(path)
    with caplog.at_level(logging.WARNING, logger="service.tuning"):
        assert c.get("batch_profile", FIELDS) is None
    assert "unreadable" in caplog.text and str(path) in caplog.text
    c.put("batch_profile", FIELDS, {"seconds": {"1": 0.01}})
    assert cache(path).get("batch_profile", FIELDS) == {"seconds": {"1": 0.01}}


def test_a_cache_that_cannot_be_written_is_logged_not_raised(tmp_path, caplog):
    blocker = tmp_path / "file"
    blocker.write_text("")
    c = cache(blocker / "t.json")  # its directory would have to be a file's child
    with caplog.at_level(logging.WARNING, logger="service.tuning"):
        c.put("batch_profile", FIELDS, {"seconds": {"1": 0.01}})
    assert "cannot be written" in caplog.text
    assert c.get("batch_profile", FIELDS) is None


def test_the_fingerprint_and_bundle_identity_are_stable():
    a, b = machine_fingerprint(), machine_fingerprint()
    assert a == b and a["cpus"] >= 1 and a["cpu"]
    assert bundle_identity({"x": "1", "y": "2"}) == bundle_identity({"y": "2", "x": "1"})
    assert bundle_identity({"x": "1"}) != bundle_identity({"x": "2"})
