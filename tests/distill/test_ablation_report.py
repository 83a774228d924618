"""`results/mm_ablation.md`: the starting point first, then one row per run with what it changed."""

import json

import pytest

from distill.ablation_report import ablation_markdown
from distill.distill_config import load_distill_config


def _row(fd: float, w: float) -> dict:
    a = {"overall": 0.5, "one_object": 0.9, "two_objects": 0.05}
    return {"fd": fd, "guidance": w, "adherence": a, "precision": 0.8, "recall": 0.9, "n_images": 500,
            "eval_seed": 31337, "machine": "cpu", "free_attribute_tv": {"background": 0.4}}  # fmt: skip


def test_rows_show_the_changed_settings_and_the_figures(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "init.json").write_text(json.dumps(_row(539.0, 1.0)))
    (tmp_path / "eval" / "fast.json").write_text(json.dumps(_row(741.4, 3.0)))
    run = tmp_path / "fast"
    run.mkdir()
    cfg = load_distill_config("shapes32-cpu", overrides=["batch_size=8", "aux_lr=3e-4", "aux_steps=2"])
    (run / "config.json").write_text(cfg.model_dump_json())
    (run / "summary.json").write_text(json.dumps({"iters": 201}))
    lines = ablation_markdown(tmp_path).splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| start"))
    assert "539.000" in lines[start]
    assert lines[start + 1].startswith("| fast | 8 | 0.0001 / 0.0003 | 2 | ")
    assert "| 201 | 3 | 741.400 |" in lines[start + 1]
    (tmp_path / "eval" / "init.json").unlink()
    with pytest.raises(FileNotFoundError, match="starting point"):
        ablation_markdown(tmp_path)
