"""The app factory: bundle discovery, the default model, and readiness through the lifespan."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.app import create_app, discover_bundles
from service.fakes import fake_pipeline
from service.settings import ServiceSettings, SettingsError


def wait_ready(client: TestClient, timeout_s: float = 120.0) -> None:
    """Poll /readyz until the warm-up ends, by a deadline: a count of polls is a time that depends on
    how busy the machine is (the warm-up profiles each model's batch sizes)."""
    import time

    end = time.monotonic() + timeout_s
    while client.get("/readyz").status_code != 200:
        assert time.monotonic() < end, f"not ready after {timeout_s:g} s"
        time.sleep(0.01)


def make_bundle_dir(path):
    path.mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({}))
    return path


def test_bundles_are_a_bundle_or_a_folder_of_bundles(tmp_path):
    a = make_bundle_dir(tmp_path / "set" / "a")
    b = make_bundle_dir(tmp_path / "set" / "b")
    (tmp_path / "set" / "notes").mkdir()
    single = make_bundle_dir(tmp_path / "single")
    assert discover_bundles([tmp_path / "set", single]) == [a, b, single]


def test_missing_or_empty_bundle_folders_name_the_setting(tmp_path):
    with pytest.raises(SettingsError, match=r"FEWSTEP_BUNDLES: .*does not exist"):
        discover_bundles([tmp_path / "nowhere"])
    with pytest.raises(SettingsError, match="FEWSTEP_BUNDLES: no bundle"):
        discover_bundles([tmp_path])


def test_an_unknown_default_model_stops_start_up_naming_the_setting():
    app = create_app(ServiceSettings(default_model="nope"), [fake_pipeline("fake")])
    with pytest.raises(SettingsError, match="FEWSTEP_DEFAULT_MODEL"), TestClient(app):
        pass


def test_ready_after_warm_up_and_not_before():
    app = create_app(ServiceSettings(), [fake_pipeline("fake")])
    client = TestClient(app)
    assert client.get("/readyz").status_code == 503
    with client:
        wait_ready(client)
        assert client.get("/readyz").json() == {"status": "ready", "models": ["fake"]}


def test_nothing_loads_at_import_or_construction():
    app = create_app(ServiceSettings(bundles=["/does/not/exist"]))  # loading happens in the lifespan only
    assert app.state.engine is None


def test_one_line_says_ready_with_the_urls_of_the_playground_docs_and_metrics(caplog):
    import logging
    import time

    caplog.set_level(logging.INFO, logger="service.app")
    app = create_app(ServiceSettings(host="0.0.0.0", port=8123), [fake_pipeline("fake")])
    with TestClient(app) as client:
        wait_ready(client)
        for _ in range(100):  # the line is logged right after readiness flips
            if any("ready" in r.getMessage() for r in caplog.records if r.name == "service.app"):
                break
            time.sleep(0.01)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "service.app" and "ready" in r.getMessage()]
    for url in ("http://127.0.0.1:8123/", "http://127.0.0.1:8123/docs", "http://127.0.0.1:8123/metrics"):
        assert url in line
    assert "default model fake" in line


def test_a_bundle_without_an_export_time_gets_its_manifest_files_time(tmp_path):
    import os
    from datetime import UTC, datetime

    from service.app import stamp_export_time

    manifest = tmp_path / "manifest.json"
    manifest.write_text("{}")
    when = datetime(2026, 11, 2, 8, 30, tzinfo=UTC)
    os.utime(manifest, (when.timestamp(), when.timestamp()))
    pipeline = fake_pipeline("fake")
    stamp_export_time(pipeline, manifest)
    assert pipeline.manifest.exported_at == when
    recorded = datetime(2025, 1, 1, tzinfo=UTC)
    pipeline.manifest = pipeline.manifest.model_copy(update={"exported_at": recorded})
    stamp_export_time(pipeline, manifest)  # a recorded time wins
    assert pipeline.manifest.exported_at == recorded


def test_a_configured_tuning_cache_keeps_the_batch_profile_and_the_next_start_reuses_it(tmp_path):
    """FEWSTEP_TUNING_CACHE: the first start writes each model's profile, the second serves its bounds."""
    path = tmp_path / "tuning.json"
    settings = ServiceSettings(tuning_cache=path, tuning_profile_budget_s=0.5)

    def one_start():
        pipe = fake_pipeline("fake", steps=(1,))
        pipe.identity = {"bundle": "abc", "path": "fake-fp32", "backend": {}}
        with TestClient(create_app(settings, pipelines=[pipe])) as client:
            wait_ready(client)
            return client.app.state.engine

    first = one_start()
    doc = json.loads(path.read_text())
    assert [e["what"] for e in doc["entries"].values()] == ["batch_profile"]
    second = one_start()
    assert second.cost_profiles["fake"].seconds == first.cost_profiles["fake"].seconds
    assert second.batch_limits == first.batch_limits
