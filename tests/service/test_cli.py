"""`fewstep serve`: flags over the environment, and a clear error for missing bundles."""

from __future__ import annotations

from pathlib import Path

from fewstep.cli import build_parser, main
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
