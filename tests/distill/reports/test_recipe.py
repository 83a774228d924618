"""results/mm_recipe.md (distill.reports.recipe): arms, what each changes, paired differences."""

import json

import pytest

from distill.reports.recipe import changes, recipe_markdown


def _row(fd: float, adherence: float) -> dict:
    return {
        "fd": fd, "fd_ci": [fd - 10, fd + 10], "fd_infinity": fd / 2, "kid": 0.004, "kid_ci": [0.003, 0.005],
        "adherence": {"overall": adherence, "two_objects": adherence - 0.1,
                      "by_form": {"two_objects+position+size": 0.7}},
        "adherence_ci": {"overall": [adherence - 0.02, adherence + 0.02]}, "grain": 1.2, "grain_ci": [1.1, 1.3],
        "n_images": 2000, "eval_seed": 31337, "guidance": 3.0, "machine": "test machine",
    }  # fmt: skip


def _arm(runs, name, cfg, row, iters=300):
    (runs / name).mkdir(parents=True)
    (runs / name / "config.json").write_text(json.dumps(cfg))
    summary = {"iters": iters, "image_passes": 19200, "evals_per_image_pass": 5.0}
    (runs / name / "summary.json").write_text(json.dumps(summary))
    (runs / "eval").mkdir(exist_ok=True)
    (runs / "eval" / f"{name}.json").write_text(json.dumps(row))


def test_changes_names_only_what_the_arm_learnt_differently():
    base = {"iters": 300, "weighting": "batch", "data": {"p_two_objects": 0.4, "seed": 1}}
    arm = {"iters": 350, "weighting": "batch", "warm_start": 100, "data": {"p_two_objects": 0.7, "seed": 1}}
    assert changes(base, arm) == "data.p_two_objects=0.7, warm_start=100"  # iters is how it was sized
    assert changes(base, base) == "-"


def test_the_table_reads_each_arms_config_and_marks_resolved_differences(tmp_path):
    runs, cmp = tmp_path / "runs", tmp_path / "cmp"
    base_cfg = {"weighting": "batch", "warm_start": 0}
    _arm(runs, "base", base_cfg, _row(180.0, 0.67))
    _arm(runs, "warm", {**base_cfg, "warm_start": 100}, _row(200.0, 0.68), iters=350)
    _arm(runs, "base-seed1", {**base_cfg, "seed": 1}, _row(182.0, 0.66))
    cmp.mkdir()

    def diff(d, lo, hi):
        return {"a": 0, "b": d, "diff": d, "ci": [lo, hi]}

    for name, fd in (("warm", diff(20.0, 4.0, 35.0)), ("base-seed1", diff(2.0, -9.0, 12.0))):
        c = {"fd": fd, "grain": diff(0.2, 0.1, 0.3),
             "adherence": {"overall": diff(0.01, -0.01, 0.03), "two_objects": diff(0.02, -0.02, 0.05)}}  # fmt: skip
        (cmp / f"base-vs-{name}.json").write_text(json.dumps(c))
    md = recipe_markdown(runs, cmp)
    warm = next(line for line in md.splitlines() if line.startswith("| warm |"))
    assert "warm_start=100" in warm and "| 350 |" in warm
    assert "+20.0 [+4.0, +35.0] *" in warm  # resolved: the interval excludes 0
    assert "+0.010 [-0.010, +0.030] |" in warm  # not resolved: no mark
    assert "Run-to-run spread" in md and "+2.0 [-9.0, +12.0]" in md
    assert "test machine" in md


def test_the_base_arm_is_required(tmp_path):
    runs = tmp_path / "runs"
    _arm(runs, "warm", {}, _row(1.0, 0.5))
    with pytest.raises(FileNotFoundError, match="base"):
        recipe_markdown(runs, tmp_path)


def test_the_recipe_takes_the_changes_of_arms_that_beat_the_base_and_lose_nowhere(tmp_path):
    from distill.reports.recipe import chosen_overrides, winning_arms

    runs, cmp = tmp_path / "runs", tmp_path / "cmp"
    base_cfg = {"weighting": "batch", "warm_start": 0, "lr": 1e-4, "data": {"p_two_objects": 0.4}}
    _arm(runs, "base", base_cfg, _row(180.0, 0.67))
    _arm(runs, "mix", {**base_cfg, "data": {"p_two_objects": 0.7}}, _row(170.0, 0.70))
    _arm(runs, "grainy", {**base_cfg, "warm_start": 100}, _row(160.0, 0.70))
    _arm(runs, "tie", {**base_cfg, "lr": 3e-4}, _row(179.0, 0.67))
    _arm(runs, "smooth", {**base_cfg, "aux_lr": 3e-4}, _row(179.0, 0.67))
    _arm(runs, "small", {**base_cfg, "aux_steps": 2}, _row(177.0, 0.67))
    _arm(runs, "base-seed1", {**base_cfg}, _row(150.0, 0.75))
    cmp.mkdir()

    def d(lo, hi):
        return {"diff": (lo + hi) / 2, "ci": [lo, hi]}

    figures = {  # FD, adherence, grain (B - A)
        "mix": (d(-20, -2), d(0.01, 0.05), d(-0.1, 0.1)),  # better on both, worse on nothing: wins
        "grainy": (d(-30, -5), d(0.0, 0.06), d(0.1, 0.3)),  # better FD but resolved worse grain: out
        "tie": (d(-10, 8), d(-0.02, 0.02), d(-0.1, 0.1)),  # nothing resolved: out
        "smooth": (d(-10, 8), d(-0.02, 0.02), d(-0.4, -0.2)),  # less grain, nothing worse: wins
        "base-seed1": (d(-6, -4), d(0.0, 0.004), d(-0.1, 0.1)),  # the spread (FD 5): never a change itself
        "small": (d(-5, -1), d(-0.02, 0.02), d(-0.1, 0.1)),  # resolved FD, but within the spread: out
    }
    for name, (fd, adh, grain) in figures.items():
        c = {"fd": fd, "grain": grain, "adherence": {"overall": adh, "two_objects": adh}}
        (cmp / f"base-vs-{name}.json").write_text(json.dumps(c))
    assert winning_arms(runs, cmp) == ["mix", "smooth"]
    chosen = chosen_overrides(runs, cmp)
    assert chosen == ["--set data.p_two_objects=0.7", "--set aux_lr=0.0003"]  # the rest keeps its defaults
