import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from fewstep_cli.main import build_parser, main


def _fewstep() -> list[str]:
    """The `fewstep` command as a subprocess (the console script calls the same `main`; see
    tests/fewstep_cli/test_main.py)."""
    return [sys.executable, "-m", "fewstep_cli"]


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["data", "preview", "--help"], ["train", "--help"]])
def test_every_subcommand_has_help(argv):
    r = subprocess.run([*_fewstep(), *argv], capture_output=True, text=True)
    assert r.returncode == 0 and "usage: fewstep" in r.stdout


def test_parser_lists_commands():
    help_text = build_parser().format_help()
    assert "data" in help_text and "train" in help_text


def test_data_preview_writes_a_captioned_grid(tmp_path):
    out = tmp_path / "grid.png"
    assert main(["data", "preview", "--out", str(out), "--n", "6", "--cols", "3", "--seed", "4"]) == 0
    img = np.asarray(Image.open(out))
    # 3 columns of 128-px tiles and 2 rows of tiles with caption space underneath
    assert img.shape[1] == 3 * (128 + 4) + 4 and img.shape[0] > 2 * 128
    assert img.std() > 20


def test_distill_takes_method_and_steps_from_the_config_file_unless_given(tmp_path, monkeypatch):
    """Regression (issue 16): --method and --steps used to be passed from argparse's defaults
    always, silently overriding a --config file's method and steps."""
    import json

    import distill.methods.registry

    seen = []

    def fake_distill(cfg, *args, **kwargs):
        seen.append(cfg)
        return {"iters": 0, "wall_s": 0.0, "network_forward_images": 0, "finished": True}

    monkeypatch.setattr(distill.methods.registry, "distill", fake_distill)
    config = tmp_path / "pd.json"
    config.write_text(json.dumps({"method": "pd", "steps": 4, "teacher_steps": 16}))
    base = ["distill", "--teacher", "t", "--out", str(tmp_path / "r"), "--preset", "tiny", "--config", str(config)]
    assert main(base) == 0
    assert (seen[-1].method, seen[-1].steps) == ("pd", 4)
    assert main([*base, "--steps", "2"]) == 0  # given on the command line: it wins over the file
    assert (seen[-1].method, seen[-1].steps) == ("pd", 2)
    assert main([*base, "--method", "cd", "--steps", "8"]) == 0
    assert (seen[-1].method, seen[-1].steps) == ("cd", 8)
    assert main(["distill", "--teacher", "t", "--out", str(tmp_path / "d"), "--preset", "tiny"]) == 0
    assert (seen[-1].method, seen[-1].steps) == ("mm-alt", 8)  # the config's defaults


def test_budget_images_sizes_the_run_in_training_images(monkeypatch, tmp_path):
    import distill.methods.registry

    seen, seen_options = [], []

    def fake_distill(cfg, teacher, out, options=None):
        seen.append(cfg)
        seen_options.append(options)
        return {"iters": 0, "wall_s": 0.0, "network_forward_images": 0, "finished": True}

    monkeypatch.setattr(distill.methods.registry, "distill", fake_distill)
    base = ["distill", "--teacher", "t", "--out", str(tmp_path / "r"), "--preset", "tiny", "--set", "iters=999"]
    assert main([*base, "--budget-images", "80"]) == 0  # tiny: batch 4, mm-alt draws two batches an update
    assert seen[-1].iters == 10
    assert main([*base, "--method", "pd", "--steps", "2", "--set", "teacher_steps=8", "--budget-images", "80"]) == 0
    assert seen[-1].iters == 20  # one batch an update
    assert main([*base, "--budget-images", "80", "--stop-at-images", "40"]) == 0
    assert seen_options[-1].stop_at == 5  # the first iteration that has drawn 40 images
    assert main([*base, "--stop-at-images", "40", "--stop-at", "3"]) == 2  # one or the other


@pytest.mark.parametrize(
    ("given", "expected"),
    [([], ("ddim", 4)), (["--sampler", "ancestral", "--steps", "8"], ("ancestral", 8))],
)
def test_eval_samples_a_student_with_its_own_sampler_and_k_unless_given(tmp_path, monkeypatch, given, expected):
    """`fewstep eval --model STUDENT` measures the model that is served: its own sampler and K (a pd
    student under the ancestral sampler's default 32 steps measured nothing anyone serves)."""
    import json

    import distill.evaluation.evaluate

    student = tmp_path / "pd-k4"
    student.mkdir()
    (student / "config.json").write_text(json.dumps({"student": {"method": "pd", "steps": 4, "sampler": "ddim"}}))
    seen = []

    def fake(model, sampler, steps, *args, **kwargs):
        seen.append((sampler, steps))
        figs = {"overall": 0.5, "one_object": 0.6, "two_objects": 0.4, "held_out": 0.5}
        return {"name": "x", "fd": 1.0, "kid": 0.0, "precision": 1.0, "recall": 1.0, "adherence": figs,
                "seconds_per_image": 0.01}  # fmt: skip

    monkeypatch.setattr(distill.evaluation.evaluate, "evaluate", fake)
    assert main(["eval", "--model", str(student), "--n-images", "2", *given]) == 0
    assert seen == [expected]


def test_eval_keeps_a_row_that_measured_the_same_thing_unless_fresh(tmp_path, monkeypatch):
    """`fewstep eval` reuses OUT_DIR/NAME.json when `reusable` accepts it (same weights, evaluator,
    settings, prompt set) and its bootstrap matches; `--fresh`, or other resamples, re-measures."""
    import distill.evaluation.evaluate

    row = {"name": "m", "fd": 1.0, "kid": 0.0, "precision": 1.0, "recall": 1.0, "seconds_per_image": 0.01,
           "adherence": {"overall": 0.5, "one_object": 0.6, "two_objects": 0.4, "held_out": 0.5},
           "bootstrap": {"resamples": 500}}  # fmt: skip
    asked, measured = [], []

    def fake_reusable(row_file, *settings):
        asked.append((row_file.name, settings[:5]))
        return row

    def fake_evaluate(*args, **kwargs):
        measured.append(args[:3])
        return row

    monkeypatch.setattr(distill.evaluation.evaluate, "reusable", fake_reusable)
    monkeypatch.setattr(distill.evaluation.evaluate, "evaluate", fake_evaluate)
    model = str(tmp_path / "teacher")
    base = ["eval", "--model", model, "--steps", "16", "--out-dir", str(tmp_path)]
    assert main(base) == 0
    assert measured == [] and asked == [("teacher-ancestral-16-w3.json", (model, "ancestral", 16, 3.0, 2000))]
    assert main([*base, "--fresh"]) == 0
    assert main([*base, "--resamples", "100"]) == 0
    assert measured == [(model, "ancestral", 16), (model, "ancestral", 16)]


def test_distill_table_names_the_command_given_by_regenerate(tmp_path, monkeypatch):
    """`--regenerate` is the command the table prints as the one that rebuilds it (a w = 1 table is
    rebuilt by another make target than the w = 3 one): it reaches `distill_table`, and the header
    `_write_table` writes quotes it."""
    import json

    import distill.reports.distill_table as report
    from distill.reports.distill_table import _write_table

    run = tmp_path / "runs" / "mm-alt-k8" / "student"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"student": {"method": "mm-alt", "steps": 8}}))
    seen = {}
    monkeypatch.setattr(report, "distill_table", lambda *a, **kw: seen.update(kw))
    argv = ["eval", "distill-table", "--students", str(tmp_path / "runs"), "--regenerate", "make results-distill-extra"]
    assert main(argv) == 0 and seen["regenerate"] == "make results-distill-extra"

    monkeypatch.setattr(report, "plot_fd_steps", lambda rows, path: None)
    monkeypatch.setattr(report, "markdown", lambda rows: "| rows |\n")
    row = {"n_images": 4, "eval_seed": 1, "machine": "m", "git_sha": "g"}
    _write_table([row], 1.0, tmp_path, regenerate="make results-distill-extra")
    assert "Regenerate: `make results-distill-extra`." in (tmp_path / "distill.md").read_text()
