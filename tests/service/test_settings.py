"""Settings from FEWSTEP_* variables; a bad value names its variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.settings import SettingsError, load_settings


def test_environment_with_lists_and_nested_backend(monkeypatch):
    monkeypatch.setenv("FEWSTEP_BUNDLES", "a, b/c")
    monkeypatch.setenv("FEWSTEP_API_KEYS", '["k1", "k2"]')
    monkeypatch.setenv("FEWSTEP_BACKEND__THREADS", "2")
    monkeypatch.setenv("FEWSTEP_MAX_WAIT_S", "0.05")
    s = load_settings(port=9000)
    assert s.bundles == [Path("a"), Path("b/c")]
    assert [k.get_secret_value() for k in s.api_keys] == ["k1", "k2"]
    assert s.backend.threads == 2 and s.backend.kind == "onnxruntime"
    assert s.max_wait_s == 0.05 and s.port == 9000
    assert "k1" not in repr(s)  # keys never reach logs


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FEWSTEP_MAX_BATCH_IMAGES", "0"),
        ("FEWSTEP_BACKEND__KIND", "cuda-magic"),
        ("FEWSTEP_REQUEST_TIMEOUT_S", "soon"),
        ("FEWSTEP_API_KEYS", "k1, ,"),
        ("FEWSTEP_LOG_LEVEL", "loud"),
    ],
)
def test_a_bad_value_names_its_variable(monkeypatch, var: str, value: str):
    monkeypatch.setenv(var, value)
    if var == "FEWSTEP_API_KEYS":
        monkeypatch.setenv(var, '["k1", " "]')
    with pytest.raises(SettingsError, match=var):
        load_settings()


def test_unknown_keyword_is_refused_by_name():
    with pytest.raises(SettingsError, match="FEWSTEP_MAX_BATCH"):
        load_settings(max_batch=4)


def test_the_latency_objective_and_its_settings_come_from_nested_variables(monkeypatch):
    from service.app import engine_config

    assert load_settings().slo.p99_ms is None and engine_config(load_settings()).slo.objective_s is None
    monkeypatch.setenv("FEWSTEP_SLO__P99_MS", "800")
    monkeypatch.setenv("FEWSTEP_SLO__QUALITY", "best")
    monkeypatch.setenv("FEWSTEP_SLO__SHED", "true")
    slo = engine_config(load_settings()).slo
    assert (slo.objective_s, slo.hint, slo.shed, slo.headroom) == (0.8, "best", True, 0.8)
    assert engine_config(load_settings()).needs_profile  # predictions need the warm-up cost profile


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FEWSTEP_SLO__P99_MS", "-5"),
        ("FEWSTEP_SLO__P99_MS", "soon"),
        ("FEWSTEP_SLO__QUALITY", "great"),
        ("FEWSTEP_SLO__HEADROOM", "1.5"),
        ("FEWSTEP_SLO__PRESSURE_START", "-0.1"),
        ("FEWSTEP_SLO__RECOVERY_S", "0"),
    ],
)
def test_a_bad_objective_setting_names_its_variable(monkeypatch, var: str, value: str):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()


def test_an_objective_past_the_request_deadline_is_refused_naming_both(monkeypatch):
    monkeypatch.setenv("FEWSTEP_SLO__P99_MS", "5000")
    monkeypatch.setenv("FEWSTEP_REQUEST_TIMEOUT_S", "5")
    with pytest.raises(SettingsError, match=r"FEWSTEP_SLO__P99_MS.*FEWSTEP_REQUEST_TIMEOUT_S"):
        load_settings()
    with pytest.raises(SettingsError, match="FEWSTEP_SLO__TARGET"):
        load_settings(slo={"target": 1})


def test_cors_origins_and_the_body_timeout_come_from_the_environment(monkeypatch):
    assert load_settings().cors_origins == [] and load_settings().body_timeout_s == 10.0
    monkeypatch.setenv("FEWSTEP_CORS_ORIGINS", "https://app.example, http://localhost:5173")
    monkeypatch.setenv("FEWSTEP_BODY_TIMEOUT_S", "2.5")
    s = load_settings()
    assert s.cors_origins == ["https://app.example", "http://localhost:5173"] and s.body_timeout_s == 2.5


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("FEWSTEP_CORS_ORIGINS", "https://app.example/"),  # a trailing slash never equals a browser's Origin
        ("FEWSTEP_CORS_ORIGINS", "app.example"),
        ("FEWSTEP_CORS_ORIGINS", "ftp://app.example"),
        ("FEWSTEP_BODY_TIMEOUT_S", "0"),
        ("FEWSTEP_BODY_TIMEOUT_S", "forever"),
    ],
)
def test_a_bad_cors_origin_or_body_timeout_names_its_variable(monkeypatch, var: str, value: str):
    monkeypatch.setenv(var, value)
    with pytest.raises(SettingsError, match=var):
        load_settings()
