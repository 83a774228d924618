"""`results/mm_ablation.md`: the starting point first, then one row per run with what it changed;
`results/mm_length.md`: each run's figures after each slice, in order of updates."""

import json

import pytest

from distill.methods.config import load_distill_config
from distill.reports.ablation import ablation_markdown, length_markdown, plot_length


def _row(fd: float, w: float, steps: int = 8) -> dict:
    a = {"overall": 0.5, "one_object": 0.9, "two_objects": 0.05}
    return {"fd": fd, "guidance": w, "adherence": a, "precision": 0.8, "recall": 0.9, "n_images": 500,
            "eval_seed": 31337, "machine": "cpu", "free_attribute_tv": {"background": 0.4}, "steps": steps}  # fmt: skip


def test_rows_show_the_changed_settings_the_figures_and_the_paired_difference_from_the_base(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "init.json").write_text(json.dumps(_row(539.0, 1.0)))
    for name, fd, overrides in (("fast", 741.4, ["batch_size=8", "aux_lr=3e-4", "aux_steps=2"]),
                                ("base", 700.0, ["ema_decay=0.99"])):  # fmt: skip
        (tmp_path / "eval" / f"{name}.json").write_text(json.dumps(_row(fd, 3.0)))
        run = tmp_path / name
        run.mkdir()
        cfg = load_distill_config("shapes32-cpu", overrides=overrides)
        (run / "config.json").write_text(cfg.model_dump_json())
        (run / "summary.json").write_text(json.dumps({"iters": 201}))
    compare_dir = tmp_path / "compare"
    compare_dir.mkdir()
    paired = {"fd": {"diff": 41.4, "ci": [20.0, 60.0]}, "adherence": {"overall": {"diff": -0.02, "ci": [-0.05, 0.01]}}}
    (compare_dir / "base-vs-fast.json").write_text(json.dumps(paired))
    lines = ablation_markdown(tmp_path, compare_dir).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| start"))
    assert "539.000" in lines[start]
    assert lines[start + 1].startswith("| base | 32 |") and "| 0.99 |" in lines[start + 1]
    assert lines[start + 2].startswith("| fast | 8 | 0.0001 / 0.0003 | 2 | ")
    assert "| 201 | 3 | 741.400 |" in lines[start + 2]
    assert lines[start + 2].endswith("| +41.4 [+20.0, +60.0] | -0.020 [-0.050, +0.010] |")
    header = next(line for line in lines if line.startswith("| run"))
    assert all(line.count("|") == header.count("|") == 20 for line in lines if line.startswith("| "))
    (tmp_path / "eval" / "init.json").unlink()
    with pytest.raises(FileNotFoundError, match="starting point"):
        ablation_markdown(tmp_path)


def _length_run(tmp_path, name: str, overrides: list[str], slices: dict[int, float]) -> None:
    run = tmp_path / name
    run.mkdir()
    cfg = load_distill_config("shapes32-cpu", overrides=overrides)
    (run / "config.json").write_text(cfg.model_dump_json())
    for updates, fd in slices.items():
        row = _row(fd, cfg.guidance_default, cfg.steps)
        (tmp_path / "eval" / f"{name}-it{updates}.json").write_text(json.dumps(row))
        summary = {"iters": updates, "wall_s": 3.0 * updates}
        (tmp_path / "eval" / f"{name}-it{updates}.summary").write_text(json.dumps(summary))


def test_length_rows_follow_updates_with_the_start_and_the_teacher_as_references(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "init.json").write_text(json.dumps(_row(539.0, 1.0)))
    (tmp_path / "eval" / "init-k4.json").write_text(json.dumps(_row(600.0, 1.0, steps=4)))
    teacher = tmp_path / "teacher.json"
    teacher.write_text(json.dumps(_row(448.0, 3.0) | {"sampler": "ancestral", "steps": 64}))
    # written out of order: 1000 before 250 in the file listing (lexical), the table sorts by updates
    _length_run(tmp_path, "w1", ["guidance_min=1", "guidance_max=1", "guidance_default=1"], {1000: 470.0, 250: 500.0})
    _length_run(tmp_path, "k4", ["steps=4"], {100: 650.0})
    lines = length_markdown(tmp_path, teacher).splitlines()
    body = [line for line in lines if line.startswith("| ") and not line.startswith(("| run", "| ---"))]
    assert body[0].startswith("| start (teacher w = 1, 4 ancestral steps) | 4 |") and "600.000" in body[0]
    assert body[1].startswith("| start (teacher w = 1, 8 ancestral steps) | 8 |") and "539.000" in body[1]
    assert body[2].startswith("| teacher best (ancestral, 64 steps)") and "448.000" in body[2]
    assert body[3].startswith("| k4 | 4 | [1, 5] | 100 | 5.0 | 3 | 650.000 |")
    assert body[4].startswith("| w1 | 8 | [1, 1] | 250 | 12.5 | 1 | 500.000 |")
    assert body[5].startswith("| w1 | 8 | [1, 1] | 1000 | 50.0 | 1 | 470.000 |")
    plot_length(tmp_path, tmp_path / "curve.png", teacher)
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_a_slice_whose_run_stopped_elsewhere_is_refused(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "init.json").write_text(json.dumps(_row(539.0, 1.0)))
    _length_run(tmp_path, "w1", [], {500: 480.0})
    (tmp_path / "eval" / "w1-it500.summary").write_text(json.dumps({"iters": 430, "wall_s": 1.0}))
    with pytest.raises(ValueError, match="stopped at 430"):
        length_markdown(tmp_path)
