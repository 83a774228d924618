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
