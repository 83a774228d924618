"""The registry of distillation methods: every name the config allows has a run class, the command
line offers exactly those names, `distill` dispatches on `cfg.method` with the run options as given,
and every registered method runs a 2-update smoke on a tiny random teacher and packs its student."""

import json

import pytest

import distill.methods.registry as M
from distill.methods.config import METHOD_CONFIGS, METHOD_NAMES, DistillConfig, load_distill_config
from distill.methods.runloop import RunBase, RunOptions

# What each method needs beyond the tiny preset at K = 2 (pd and cd read the teacher's DDIM grid;
# emd is a one-step generator).
EXTRA = {"pd": ["teacher_steps=4"], "cd": ["teacher_steps=4"], "emd": ["steps=1"]}


def test_every_configurable_method_has_a_run_class():
    assert tuple(M.METHODS) == METHOD_NAMES
    for name, method in M.METHODS.items():
        assert method.name == name and issubclass(method.run, RunBase) and issubclass(method.config, DistillConfig)
        assert method.config is METHOD_CONFIGS[name]


def test_the_command_line_offers_the_registered_names():
    from fewstep_cli.main import build_parser

    sub = next(a for a in build_parser()._actions if a.dest == "command")
    method = next(a for a in sub.choices["distill"]._actions if a.dest == "method")
    assert tuple(method.choices) == tuple(M.METHODS)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_distill_runs_the_registered_class_with_the_options_given(name, monkeypatch, tmp_path):
    calls = []
    monkeypatch.setattr(M, "run_loop", lambda *args: calls.append(args) or {"done": True})
    cfg = load_distill_config("tiny", None, [f"method={name}", "steps=2", *EXTRA.get(name, [])])
    options = RunOptions(progress=False, stop_at=1, max_seconds=5.0, pack_unfinished=True)
    assert M.distill(cfg, "teacher", tmp_path, options) == {"done": True}
    assert calls == [(M.METHODS[name].run, cfg, "teacher", tmp_path, options)]
    M.distill(cfg, "teacher", tmp_path)
    assert calls[-1][-1] == RunOptions()  # the defaults: resume, progress bar, run to the end


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_runs_two_updates_and_packs_a_student(name, teacher, tmp_path):
    over = [f"method={name}", "steps=2", "iters=2", "log_every=1", "ckpt_every=2", *EXTRA.get(name, [])]
    cfg = load_distill_config("tiny", None, over)
    summary = M.distill(cfg, teacher, tmp_path / "run", RunOptions(progress=False))
    assert summary["finished"] and summary["iters"] == 2 and summary["method"] == name
    assert summary["sampler"] == M.METHODS[name].run.sampler
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    info = json.loads((tmp_path / "run" / "student" / "config.json").read_text())["student"]
    assert (info["method"], info["steps"], info["sampler"]) == (name, cfg.steps, summary["sampler"])
