"""`fewstep serve`: flags over the environment, and a clear error for missing bundles."""

from __future__ import annotations

from pathlib import Path

from fewstep_cli.main import build_parser, main
from service.cli import settings_from_args


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("FEWSTEP_PORT", "7000")
    monkeypatch.setenv("FEWSTEP_MAX_BATCH_IMAGES", "4")
    monkeypatch.setenv("FEWSTEP_BACKEND__THREADS", "1")
    args = build_parser().parse_args(["serve", "--bundles", "x", "y", "--port", "8123", "--backend", "torch"])
    s = settings_from_args(args)
    assert s.port == 8123 and s.max_batch_images == 4
    assert s.bundles == [Path("x"), Path("y")]
    assert s.backend.kind == "torch" and s.backend.threads == 1


def test_missing_bundles_fail_fast_with_the_setting_named(tmp_path, capsys):
    assert main(["serve", "--bundles", str(tmp_path / "none")]) == 2
    assert "FEWSTEP_BUNDLES" in capsys.readouterr().err


def test_probe_requests_stay_out_of_the_access_log():
    import logging

    from service.cli import ProbeFilter

    def record(path: str, status: int = 200) -> logging.LogRecord:
        args = ("127.0.0.1:5000", "GET", path, "1.1", status)
        return logging.LogRecord("uvicorn.access", logging.INFO, "", 0, '%s - "%s %s HTTP/%s" %d', args, None)

    probe = ProbeFilter()
    assert not probe.filter(record("/readyz", 503)) and not probe.filter(record("/metrics"))
    assert not probe.filter(record("/healthz?verbose=1"))
    assert probe.filter(record("/generate")) and probe.filter(record("/"))


def test_quiet_logging_keeps_third_party_loggers_at_warning():
    import logging

    from service.cli import quiet_logging

    quiet_logging("info")
    assert logging.getLogger("onnxscript").getEffectiveLevel() == logging.WARNING
    assert sum(type(f).__name__ == "ProbeFilter" for f in logging.getLogger("uvicorn.access").filters) == 1
    quiet_logging("info")  # idempotent
    assert sum(type(f).__name__ == "ProbeFilter" for f in logging.getLogger("uvicorn.access").filters) == 1


def test_the_objective_flag_keeps_the_other_objective_settings_of_the_environment(monkeypatch):
    monkeypatch.setenv("FEWSTEP_SLO__SHED", "true")
    s = settings_from_args(build_parser().parse_args(["serve", "--slo-p99-ms", "750"]))
    assert s.slo.p99_ms == 750 and s.slo.shed
