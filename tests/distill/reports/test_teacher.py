import json

import pytest

from distill.reports.teacher import changes, markdown, with_ci


def _row(two: float, ci: list[float] | None) -> dict:
    adh = {
        "two_objects": two,
        "one_object": 0.9,
        "held_out": 0.5,
        "held_out_phrasing": 0.4,
        "held_out_phrasing_reference": 0.45,
        "two_objects_per_attribute": {"count": 0.7, "colour": 0.6, "shape": 0.5, "position": 0.55},
    }
    row = {"adherence": adh, "fd": 512.3, "steps": 16, "sampler": "ancestral", "guidance": 3.0, "n_images": 400}
    if ci:
        row["adherence_ci"] = {"two_objects": ci}
        row["fd_ci"] = [480.0, 560.0]
    return row


def test_with_ci_formats_figures_and_their_intervals():
    r = _row(0.412, [0.35, 0.47])
    assert with_ci(r, "adherence", "two_objects") == "0.41 [0.35, 0.47]"
    assert with_ci(r, "fd") == "512 [480, 560]"
    assert with_ci(r, "adherence", "one_object") == "0.90"  # no interval recorded
    assert with_ci(r, "adherence", "missing") == "-"


def test_changes_names_only_what_differs():
    base = {"model": {"base_channels": 32, "cross_attn_resolutions": [16, 8]}, "data": {"p_two_objects": 0.4}}
    assert changes(base, base) == "(base)"
    other = {"model": {"base_channels": 32, "cross_attn_resolutions": [32, 16, 8]}, "data": {"p_two_objects": 0.6}}
    assert changes(other, base) == "cross_attn_resolutions=[32, 16, 8], p_two_objects=0.6"


def test_markdown_has_a_row_per_run_with_cost(tmp_path):
    for name, cfg, two in (
        ("base", {"batch_size": 32}, 0.2),
        ("two60", {"batch_size": 32, "data": {"p_two_objects": 0.6}}, 0.3),
    ):
        (tmp_path / name).mkdir()
        (tmp_path / name / "config.json").write_text(json.dumps(cfg))
        (tmp_path / name / "summary.json").write_text(json.dumps({"steps": 1200, "wall_s": 1500}))
        (tmp_path / "eval").mkdir(exist_ok=True)
        (tmp_path / "eval" / f"{name}.json").write_text(json.dumps(_row(two, [two - 0.05, two + 0.05])))
    cost = tmp_path / "cost.json"
    cost.write_text(
        json.dumps({"models": {"base": {"params": 1.66e6, "gflop_per_eval": 0.53, "ort_ms_per_eval": 1.2}}})
    )
    md = markdown(tmp_path, cost)
    assert "| base | (base) | 1.66M | 0.53 | 1.20 | 1200 x 32 | 25 | 0.20 [0.15, 0.25] |" in md
    assert "| two60 | p_two_objects=0.6 | - | - | - |" in md
    assert "0.40 (0.45)" in md


def test_markdown_refuses_an_empty_directory(tmp_path):
    (tmp_path / "eval").mkdir()
    with pytest.raises(FileNotFoundError):
        markdown(tmp_path)
