"""`distill.reports.winners`: which students ship and which one the service defaults to, decided on paired
intervals, and the copy that ships only the weights the table measured."""

import json

import pytest

from distill.reports import winners
from distill.reports.winners import Candidate, decide, dominates, pick_default, pick_winner, ship


def _cand(name: str, k: int, fd: float, adh: float, one: float = 0.95, model: str = "") -> Candidate:
    return Candidate(name, k, fd, adh, one, model or f"runs/{name}/student", "0" * 64)


def _pair(fd_ci, adh_ci):
    """A paired comparison B - A with the given intervals (the point estimate at their middle)."""

    def d(ci):
        return {"diff": None if ci is None else sum(ci) / 2, "ci": ci}

    return {"fd": d(fd_ci), "adherence": {"overall": d(adh_ci)}}


UNRESOLVED = _pair([-5.0, 5.0], [-0.01, 0.01])


def _pairing(table: dict[tuple[str, str], dict]):
    """Pairs looked up by (A, B), either way round (flipping the intervals), unresolved otherwise."""

    def flip(p):
        return _pair([-p["fd"]["ci"][1], -p["fd"]["ci"][0]], [-c for c in reversed(p["adherence"]["overall"]["ci"])])

    def pair(a: Candidate, b: Candidate):
        if (a.name, b.name) in table:
            return table[(a.name, b.name)]
        if (b.name, a.name) in table:
            return flip(table[(b.name, a.name)])
        return UNRESOLVED

    return pair


@pytest.mark.parametrize(
    ("fd_ci", "adh_ci", "expected"),
    [
        ([-9.0, -1.0], [-0.01, 0.01], True),  # lower FD, resolved; adherence unresolved
        ([-5.0, 5.0], [0.01, 0.05], True),  # higher adherence, resolved; FD unresolved
        ([-9.0, -1.0], [0.01, 0.05], True),  # better on both
        ([-5.0, 5.0], [-0.01, 0.01], False),  # nothing resolved
        ([-9.0, -1.0], [-0.05, -0.01], False),  # better FD bought with resolved-worse adherence
        ([1.0, 9.0], [0.01, 0.05], False),  # better adherence bought with resolved-worse FD
        (None, [0.01, 0.05], True),  # a figure without an interval counts as unresolved
    ],
)
def test_dominance_needs_a_resolved_gain_and_no_resolved_loss(fd_ci, adh_ci, expected):
    assert dominates(_pair(fd_ci, adh_ci)) is expected


def test_the_winner_is_the_undominated_method_with_the_highest_adherence():
    mm, pd, cd = _cand("mm-alt-k8", 8, 158.5, 0.701), _cand("pd-k8", 8, 144.5, 0.668), _cand("cd-k8", 8, 147.0, 0.659)
    # mm-alt: adherence resolved higher than pd's and cd's, FD unresolved (the committed K = 8 table).
    pair = _pairing({("pd-k8", "mm-alt-k8"): _pair([-2.0, 30.0], [0.009, 0.059]),
                     ("cd-k8", "mm-alt-k8"): _pair([-5.0, 28.0], [0.016, 0.067])})  # fmt: skip
    win, beaten = pick_winner([mm, pd, cd], pair)
    assert win is mm
    assert beaten == {"mm-alt-k8": [], "pd-k8": ["mm-alt-k8"], "cd-k8": ["mm-alt-k8"]}


def test_a_point_estimate_lead_does_not_beat_a_resolved_loss():
    """The highest adherence loses when another method has a resolved lower FD and no resolved loss."""
    hi, lo = _cand("mm-alt-k4", 4, 300.0, 0.70), _cand("pd-k4", 4, 200.0, 0.69)
    pair = _pairing({("mm-alt-k4", "pd-k4"): _pair([-120.0, -80.0], [-0.03, 0.01])})
    win, beaten = pick_winner([hi, lo], pair)
    assert win is lo and beaten["mm-alt-k4"] == ["pd-k4"]
    # Unresolved everywhere: the higher adherence wins, FD breaks an exact tie.
    assert pick_winner([hi, lo], _pairing({}))[0] is hi
    tie = _cand("cd-k4", 4, 150.0, 0.70)
    assert pick_winner([hi, tie], _pairing({}))[0] is tie


def test_the_default_is_the_fewest_steps_unless_more_steps_buy_a_resolved_gain():
    k4, k8 = _cand("pd-k4", 4, 180.0, 0.66), _cand("mm-alt-k8", 8, 158.0, 0.70)
    assert pick_default([k8, k4], _pairing({}), teacher_one_object=0.94)[0] == "pd-k4"
    gain = _pairing({("pd-k4", "mm-alt-k8"): _pair([-30.0, -5.0], [0.02, 0.06])})
    name, why = pick_default([k8, k4], gain, teacher_one_object=0.94)
    assert name == "mm-alt-k8" and "0.950" in why


def test_the_default_falls_back_to_the_teacher_below_the_one_object_floor():
    k4 = _cand("pd-k4", 4, 180.0, 0.66, one=0.85)
    k8 = _cand("mm-alt-k8", 8, 158.0, 0.70, one=0.90)
    assert pick_default([k4, k8], _pairing({}), teacher_one_object=0.94)[0] == "mm-alt-k8"  # 0.90 >= 0.89
    name, why = pick_default([k4, k8], _pairing({}), teacher_one_object=0.96)
    assert name == "teacher" and "0.910" in why


def test_the_decision_records_every_k_and_reads_as_a_table():
    cands = [_cand("mm-alt-k4", 4, 200.0, 0.66), _cand("pd-k4", 4, 190.0, 0.65), _cand("mm-alt-k8", 8, 158.0, 0.70)]
    d = decide(cands, _pairing({}), teacher_one_object=0.94)
    assert d["per_k"]["4"]["winner"] == "mm-alt-k4" and d["per_k"]["8"]["winner"] == "mm-alt-k8"
    assert [s["name"] for s in d["students"]] == ["mm-alt-k4", "mm-alt-k8"]
    assert d["default"] == "mm-alt-k4" and "dominates" in d["rule"]
    json.dumps(d)  # the record is written as JSON
    text = winners.markdown(d)
    assert "| 4 | pd-k4 | 190.0 | 0.650 | 0.950 | - |  |" in text and "**mm-alt-k4**" in text


def test_the_winner_is_decided_at_the_tables_w_and_its_conditioned_version_ships():
    """The contest is among students distilled at the table's w; the winner's guidance-conditioned
    version (same method and K) ships under the method's name, a losing method's does not."""

    def c(name, method, k, fd, adh, cond):
        return Candidate(name, k, fd, adh, 0.95, f"runs/{name}/student", "0" * 64, method=method, conditioned=cond)

    mm, pd = c("mm-alt-k8", "mm-alt", 8, 158.0, 0.70, False), c("pd-k8", "pd", 8, 145.0, 0.66, False)
    mm_wc = c("mm-alt-wc-k8", "mm-alt", 8, 170.0, 0.69, True)
    pd_wc = c("pd-wc-k8", "pd", 8, 140.0, 0.90, True)  # the best figures, but not in the contest
    pair = _pairing({("pd-k8", "mm-alt-k8"): _pair([-2.0, 30.0], [0.01, 0.06])})
    d = decide([mm, pd, mm_wc, pd_wc], pair, teacher_one_object=0.96)
    assert d["per_k"]["8"]["winner"] == "mm-alt-k8" and d["per_k"]["8"]["shipped"] == "mm-alt-wc-k8"
    assert [(s["name"], s["row"], s["model"]) for s in d["students"]] == [
        ("mm-alt-k8", "mm-alt-wc-k8", "runs/mm-alt-wc-k8/student")
    ]
    assert d["default"] == "mm-alt-k8"  # the shipped name, not the row's
    row = {x["name"]: x for x in d["per_k"]["8"]["candidates"]}
    assert row["pd-wc-k8"]["dominated_by"] is None and row["pd-k8"]["dominated_by"] == ["mm-alt-k8"]
    text = winners.markdown(d)
    assert "| 8 | mm-alt-wc-k8 | 170.0 | 0.690 | 0.950 | (conditioned: not in the contest) |  | as mm-alt-k8 |" in text
    # Without a conditioned version the fixed-w winner itself is what the decision names.
    assert decide([mm, pd], pair, teacher_one_object=0.96)["students"][0]["row"] == "mm-alt-k8"


def test_ship_copies_the_measured_weights_and_refuses_others(tmp_path):
    from fewstep.bundle import sha256_file

    run = tmp_path / "runs" / "mm-alt-k8" / "student"
    run.mkdir(parents=True)
    (run / "model.safetensors").write_bytes(b"weights")
    (run / "config.json").write_text(json.dumps({"student": {"method": "mm-alt", "steps": 8, "guidance": [1, 3, 5]}}))
    decision = {"students": [{"name": "mm-alt-k8", "k": 8, "model": str(run),
                              "model_sha256": sha256_file(run / "model.safetensors")}]}  # fmt: skip
    path = tmp_path / "winners.json"
    path.write_text(json.dumps(decision))
    out = tmp_path / "models" / "students"
    (out / "mm-alt-k8").mkdir(parents=True)
    (out / "mm-alt-k8" / "stale.txt").write_text("old")
    assert ship(path, out) == [out / "mm-alt-k8"]
    assert (out / "mm-alt-k8" / "model.safetensors").read_bytes() == b"weights"
    assert not (out / "mm-alt-k8" / "stale.txt").exists()
    (run / "model.safetensors").write_bytes(b"retrained")
    with pytest.raises(ValueError, match=r"mm-alt-k8: .* the table measured"):
        ship(path, out)
    # A committed student that the table scored in place ships as it is (not deleted by its own copy).
    in_place = dict(decision["students"][0], model=str(out / "mm-alt-k8"),
                    model_sha256=sha256_file(out / "mm-alt-k8" / "model.safetensors"))  # fmt: skip
    path.write_text(json.dumps({"students": [in_place]}))
    assert ship(path, out) == [out / "mm-alt-k8"]
    assert (out / "mm-alt-k8" / "model.safetensors").read_bytes() == b"weights"
    decision["students"][0]["model"] = str(tmp_path / "gone")
    path.write_text(json.dumps(decision))
    with pytest.raises(FileNotFoundError, match="make results-distill"):
        ship(path, out)


def test_ship_refuses_a_student_distilled_at_one_guidance_scale(tmp_path):
    """Such a student's bundle accepts that w only: as a default it would refuse the service's range."""
    from fewstep.bundle import sha256_file

    run = tmp_path / "student"
    run.mkdir()
    (run / "model.safetensors").write_bytes(b"weights")
    (run / "config.json").write_text(json.dumps({"student": {"method": "pd", "steps": 4, "guidance": [3, 3, 3]}}))
    digest = sha256_file(run / "model.safetensors")
    path = tmp_path / "winners.json"
    path.write_text(json.dumps({"students": [{"name": "pd-k4", "k": 4, "model": str(run), "model_sha256": digest}]}))
    with pytest.raises(ValueError, match="fixed w = 3"):
        ship(path, tmp_path / "out")
    assert ship(path, tmp_path / "out", allow_fixed_guidance=True) == [tmp_path / "out" / "pd-k4"]
