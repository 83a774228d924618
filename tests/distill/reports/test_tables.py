from pathlib import Path

from distill.reports.tables import write_table


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

    rows_dir = tmp_path / "teacher" / "table"
    rows_dir.mkdir(parents=True)
    (tmp_path / "teacher" / "ancestral-16.json").write_text("{}")  # the served row beside it: not a table row
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
    from distill.reports.tables import markdown_table

    row = _row("ancestral", 64, 446.123)
    row.update(fd_ci=[420.04, 471.96], adherence_ci={"overall": [0.45, 0.55]}, grain=1.234, grain_ci=[1.1, 1.4],
               grain_reference=0.01)  # fmt: skip
    md = markdown_table([row, _row("ddim", 8, 4.5)])
    assert "| 446.1 [420.0, 472.0] |" in md and "| 0.500 [0.450, 0.550] |" in md
    assert "| 1.23 [1.10, 1.40] (renders 0.01) |" in md
    assert "| 4.500 |" in md  # a row written before intervals prints as before


def test_the_teacher_table_reuses_its_rows_and_leaves_the_served_row_alone(tmp_path, monkeypatch):
    """Rows measured for the same weights and settings are reused (an interrupted table resumes),
    `reuse=False` re-measures, and the table's rows never overwrite `teacher/ancestral-16.json`, the
    served row measured at another image count."""
    import json

    import distill.reports.tables as report

    calls = []

    def fake_evaluate(model, sampler, steps, guidance, n_images, name, out_dir, progress=True):
        calls.append(name)
        row = _row(sampler, steps, 1.0 + steps)
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / f"{name}.json").write_text(json.dumps(row))
        return row

    measured = {}

    def fake_reusable(row_file, model, sampler, steps, guidance, n_images, *args, **kwargs):
        # The real check compares weights' and evaluator's hashes (tests/distill/evaluation/test_evaluate.py).
        return json.loads(row_file.read_text()) if row_file.is_file() and measured.get(row_file.name) else None

    monkeypatch.setattr(report, "evaluate", fake_evaluate)
    monkeypatch.setattr(report, "reusable", fake_reusable)
    served = tmp_path / "teacher" / "ancestral-16.json"
    served.parent.mkdir(parents=True)
    served.write_text('{"n_images": 2000}')
    grid = {"ancestral": (8, 16), "ddim": (8,)}
    report.teacher_table("m", 3.0, 10, tmp_path, grid, progress=False)
    assert sorted(calls) == ["ancestral-16", "ancestral-8", "ddim-8"]
    assert json.loads(served.read_text()) == {"n_images": 2000}
    assert (tmp_path / "teacher" / "table" / "ancestral-16.json").is_file()

    calls.clear()
    measured.update({"ancestral-8.json": True, "ddim-8.json": True})  # as if interrupted after these
    report.teacher_table("m", 3.0, 10, tmp_path, grid, progress=False)
    assert calls == ["ancestral-16"]
    calls.clear()
    report.teacher_table("m", 3.0, 10, tmp_path, grid, progress=False, reuse=False)
    assert len(calls) == 3
    md = (tmp_path / "teacher.md").read_text()
    assert "| ancestral | 16 |" in md and "| ddim | 8 |" in md

    calls.clear()
    report.guidance_sweep("m", (1.0, 3.0), "ancestral", 8, 10, tmp_path, progress=False)
    assert calls == ["ancestral-8-w1", "ancestral-8-w3"]
    measured["ancestral-8-w1.json"] = True
    calls.clear()
    report.guidance_sweep("m", (1.0, 3.0), "ancestral", 8, 10, tmp_path, progress=False)
    assert calls == ["ancestral-8-w3"]


def test_the_teacher_table_adopts_the_guidance_sweeps_row_at_its_own_setting(tmp_path, monkeypatch):
    """The sweep's row at the table's sampler, steps and w is the same measurement: the table copies
    it (sidecar and grid renamed with it) instead of re-measuring, and leaves a row it has alone."""
    import json

    import distill.reports.tables as report

    calls = []

    def fake_evaluate(model, sampler, steps, guidance, n_images, name, out_dir, progress=True):
        calls.append(name)
        return _row(sampler, steps, 9.0)

    monkeypatch.setattr(report, "evaluate", fake_evaluate)
    monkeypatch.setattr(report, "reusable", lambda f, *a, **k: json.loads(f.read_text()) if f.is_file() else None)
    sweep = tmp_path / "guidance"
    sweep.mkdir()
    row = _row("ancestral", 16, 5.0) | {"name": "ancestral-16-w3", "per_image": "ancestral-16-w3.npz", "guidance": 3.0}
    (sweep / "ancestral-16-w3.json").write_text(json.dumps(row))
    (sweep / "ancestral-16-w3.npz").write_bytes(b"per-image")
    (sweep / "ancestral-16-w2.json").write_text(json.dumps(row | {"guidance": 2.0}))

    report.teacher_table("m", 3.0, 10, tmp_path, {"ancestral": (8, 16)}, progress=False)
    assert calls == ["ancestral-8"]  # 16 steps at w = 3 came from the sweep
    table = tmp_path / "teacher" / "table"
    adopted = json.loads((table / "ancestral-16.json").read_text())
    assert (adopted["name"], adopted["per_image"], adopted["fd"]) == ("ancestral-16", "ancestral-16.npz", 5.0)
    assert (table / "ancestral-16.npz").read_bytes() == b"per-image"

    calls.clear()
    report.teacher_table("m", 2.0, 10, tmp_path / "other", {"ancestral": (16,)}, progress=False)
    assert calls == ["ancestral-16"]  # no sweep row at w = 2 under tmp_path/other: measured
    assert not report.adopt_row(sweep / "ancestral-16-w3.json", table, "ancestral-16")  # a row is there


def test_a_table_of_rows_from_two_machines_names_each_machine_with_its_rows(tmp_path):
    """Rows reused from another session may come from another machine: the header says which."""
    rows = [_row("ancestral", 8, 3.0), _row("ancestral", 16, 2.0) | {"machine": "other cpu"}]
    write_table(rows, tmp_path / "t.md", None, "Teacher", "models/teacher")
    head = (tmp_path / "t.md").read_text().splitlines()[2]
    assert "machines: test cpu (ancestral-8-w3); other cpu (ancestral-16-w3)" in head
    write_table(rows[:1], tmp_path / "t.md", None, "Teacher", "models/teacher")
    assert "machine: test cpu, git abc." in (tmp_path / "t.md").read_text()


def test_a_row_under_the_headline_image_count_says_why_with_its_intervals(tmp_path):
    import json

    from distill.reports.tables import HEADLINE_IMAGES, note_sample_size

    row = _row("ancestral", 8, 446.1) | {"n_images": 500, "fd_ci": [420.0, 472.0]}
    row["adherence_ci"] = {"overall": [0.45, 0.55]}
    path = tmp_path / "ancestral-8.json"
    path.write_text(json.dumps(row))
    note = note_sample_size(dict(row), path)["interval_note"]
    assert note.startswith("500 images, not 2,000") and "FD [420.0, 472.0], adherence [0.450, 0.550]" in note
    assert json.loads(path.read_text())["interval_note"] == note
    full = row | {"n_images": HEADLINE_IMAGES}
    assert "interval_note" not in note_sample_size(dict(full), tmp_path / "none.json")
