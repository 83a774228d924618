"""The app factory: bundle discovery, the default model, and readiness through the lifespan."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from service.app import create_app, discover_bundles
from service.backends.fake import fake_pipeline
from service.settings import ServiceSettings, SettingsError


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
        for _ in range(500):
            if client.get("/readyz").status_code == 200:
                break
        assert client.get("/readyz").json() == {"status": "ready", "models": ["fake"]}


def test_nothing_loads_at_import_or_construction():
    app = create_app(ServiceSettings(bundles=["/does/not/exist"]))  # loading happens in the lifespan only
    assert app.state.engine is None
