from distill.report import write_table


def _row(sampler, steps, fd):
    return {
        "sampler": sampler, "steps": steps, "guidance": 3.0, "nfe": 2.0 * steps, "fd": fd, "kid": 0.01,
        "precision": 0.9, "recall": 0.8, "seconds_per_image": 0.01, "n_images": 10, "eval_seed": 1,
        "machine": "test cpu", "git_sha": "abc",
        "adherence": {"overall": 0.5, "one_object": 0.6, "two_objects": 0.4, "held_out": None, "per_attribute": {}},
        "free_attribute_tv": {"background": 0.1},
    }  # fmt: skip


def test_table_and_plot(tmp_path):
    rows = [_row("ancestral", 8, 3.0), _row("ancestral", 16, 2.0), _row("ddim", 8, 4.5)]
    write_table(rows, tmp_path / "t.md", tmp_path / "t.png", "Teacher", "models/teacher")
    md = (tmp_path / "t.md").read_text()
    lines = [line for line in md.splitlines() if line.startswith("| ")]
    assert len(lines) == 2 + len(rows)  # header, separator, rows
    assert "| ddim | 8 | 3 | 16 | 4.500 |" in md and "| - |" in md  # held_out None renders as '-'
    assert (tmp_path / "t.png").stat().st_size > 5000 and "10 images per row" in md


def test_table_report_only_rebuilds_from_the_rows(tmp_path):
    import json

    from fewstep_cli.main import main

    rows_dir = tmp_path / "teacher"
    rows_dir.mkdir()
    for sampler, steps, fd in (("ddim", 8, 30.0), ("ancestral", 16, 20.0), ("ancestral", 8, 25.0)):
        row = {
            "sampler": sampler, "steps": steps, "guidance": 3.0, "nfe": 2.0 * steps, "fd": fd, "kid": 0.01,
            "adherence": {"overall": 0.5, "one_object": 0.9, "two_objects": 0.1, "held_out": 0.6},
            "precision": 0.8, "recall": 0.9, "free_attribute_tv": {"background": 0.1}, "seconds_per_image": 0.1,
            "n_images": 10, "eval_seed": 1, "machine": "test", "git_sha": "abc",
        }  # fmt: skip
        (rows_dir / f"{sampler}-{steps}.json").write_text(json.dumps(row))
    assert main(["eval", "table", "--model", "m", "--report-only", "--out-dir", str(tmp_path)]) == 0
    lines = [
        ln
        for ln in (tmp_path / "teacher.md").read_text().splitlines()
        if ln.startswith("| ancestral") or ln.startswith("| ddim")
    ]
    assert [ln.split(" | ")[0:2] for ln in lines] == [["| ancestral", "8"], ["| ancestral", "16"], ["| ddim", "8"]]
    assert (tmp_path / "teacher_fd_nfe.png").is_file()
    assert main(["eval", "table", "--model", "m", "--report-only", "--out-dir", str(tmp_path / "none")]) == 2


def test_rows_with_intervals_and_grain_print_them():
    from distill.report import markdown_table

    row = _row("ancestral", 64, 446.123)
    row.update(fd_ci=[420.04, 471.96], adherence_ci={"overall": [0.45, 0.55]}, grain=1.234, grain_ci=[1.1, 1.4],
               grain_reference=0.01)  # fmt: skip
    md = markdown_table([row, _row("ddim", 8, 4.5)])
    assert "| 446.1 [420.0, 472.0] |" in md and "| 0.500 [0.450, 0.550] |" in md
    assert "| 1.23 [1.10, 1.40] (renders 0.01) |" in md
    assert "| 4.500 |" in md  # a row written before intervals prints as before
