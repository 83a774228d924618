"""Which students the project ships: the distillation table's winner at each K and, among the winners,
the service's default model. One home for the rule, so that the README, the Makefile and the tests
read the same decision (`results/distill_winners.json`, written by `fewstep eval distill-table`).

Why a rule on paired intervals rather than on point estimates: at 2,000 images FD's own interval is
about +-20 and the methods' FDs are within that of one another, while their paired differences are
far tighter (`distill.evaluation.compare`). A point estimate would crown whichever method the sampling noise
favoured; the rule below moves only on differences the evaluation resolves.

The rule, at each K (every method's EMA weights, one w, the same prompts and seeds):

1. B *dominates* A when B is better than A on FD (lower) or on overall adherence (higher) by a
   paired 95% interval that excludes 0, and worse on neither by such an interval.
2. The winner is the undominated method with the highest overall adherence (what a user sees first:
   the prompt followed); FD breaks ties.

The winner is picked among the students distilled at the table's one w (like with like: each was
trained for the w it is scored at). What ships at each K is the winner's guidance-conditioned
version (the same method at that K, distilled for a range of w) where the table has one: a fixed-w
student's bundle accepts that w only, so as a default it would refuse the guidance scales the
service offers. The conditioned version is scored at the table's w beside the others, and its row
(with its paired cost against the fixed-w winner) is what the shipped student is judged by.

The default model is the shipped student with the fewest steps that no other shipped student
dominates (a 4-step student serves at about twice the 8-step one's rate, so more steps must buy a
resolved gain), provided its one-object adherence is within `ONE_OBJECT_MARGIN` of the teacher's at
the teacher's served setting; if none qualifies, the default is the teacher.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.kit.checkpoint import PACKED_WEIGHTS, student_info
from fewstep.bundle import sha256_file

log = logging.getLogger(__name__)

ONE_OBJECT_MARGIN = 0.05
WINNERS_FILE = "distill_winners.json"


@dataclass(frozen=True)
class Candidate:
    """One method's EMA row at one K."""

    name: str  # the table's row, e.g. mm-alt-k8, or mm-alt-wc-k8 for a guidance-conditioned student
    k: int
    fd: float
    adherence: float
    one_object: float
    model: str  # the student's directory (a run's `student/`)
    model_sha256: str
    method: str = ""  # e.g. mm-alt; "" reads the method off `name`
    conditioned: bool = False  # distilled for a range of w (servable at every w the service offers)

    @property
    def shipped_name(self) -> str:
        """The name it ships under, `<method>-k<K>` (a conditioned student takes its method's name)."""
        return f"{self.method}-k{self.k}" if self.method else self.name


def _sign(d: Mapping[str, Any], higher_is_better: bool) -> int:
    """+1 when B is better than A by an interval that excludes 0, -1 when worse, 0 when unresolved."""
    ci = d.get("ci")
    if not ci:
        return 0
    if ci[0] > 0:
        return 1 if higher_is_better else -1
    if ci[1] < 0:
        return -1 if higher_is_better else 1
    return 0


def dominates(pair: Mapping[str, Any]) -> bool:
    """Whether B dominates A in a paired comparison B - A (`distill.evaluation.compare.paired`)."""
    signs = (_sign(pair["fd"], higher_is_better=False), _sign(pair["adherence"]["overall"], higher_is_better=True))
    return max(signs) > 0 and min(signs) >= 0


Pairing = Callable[[Candidate, Candidate], Mapping[str, Any]]  # (A, B) -> the paired comparison B - A


def _dominated_by(c: Candidate, others: Sequence[Candidate], pair: Pairing) -> list[str]:
    return [o.name for o in others if o.name != c.name and dominates(pair(c, o))]


def pick_winner(candidates: Sequence[Candidate], pair: Pairing) -> tuple[Candidate, dict[str, list[str]]]:
    """The winner among one K's methods (rule above) and, for the record, who dominates whom."""
    if not candidates:
        raise ValueError("no candidates to pick a winner from")
    beaten = {c.name: _dominated_by(c, candidates, pair) for c in candidates}
    free = [c for c in candidates if not beaten[c.name]]
    # Dominance on resolved differences cannot cycle (a dominator is never resolved-worse on either
    # figure), so some candidate is always free; the fallback keeps the function total all the same.
    pool = free or list(candidates)
    return max(pool, key=lambda c: (c.adherence, -c.fd)), beaten


def pick_default(
    winners: Sequence[Candidate], pair: Pairing, teacher_one_object: float, margin: float = ONE_OBJECT_MARGIN
) -> tuple[str, str]:
    """The default model's name (a winner's, or "teacher") and why, in one sentence."""
    floor = teacher_one_object - margin
    fit = sorted((w for w in winners if w.one_object >= floor), key=lambda w: w.k)
    for w in fit:
        if not _dominated_by(w, fit, pair):
            return w.name, (
                "the fewest-step shipped student no other shipped student dominates; one-object adherence "
                f"{w.one_object:.3f} against the teacher's {teacher_one_object:.3f} (floor {floor:.3f})"
            )
    return "teacher", (
        f"no winner's one-object adherence reaches {floor:.3f} (the teacher's {teacher_one_object:.3f} minus {margin})"
    )


def decide(
    candidates: Sequence[Candidate],
    pair: Pairing,
    teacher_one_object: float | None,
    margin: float = ONE_OBJECT_MARGIN,
) -> dict[str, Any]:
    """The whole decision as a JSON-able record: each K's candidates, winner and dominance, and the
    default (None when the teacher's served row, the one-object floor, is not known)."""
    by_k: dict[int, list[Candidate]] = {}
    for c in candidates:
        by_k.setdefault(c.k, []).append(c)
    per_k, shipped = {}, []
    for k in sorted(by_k):
        fixed = [c for c in by_k[k] if not c.conditioned]
        win, beaten = pick_winner(fixed or by_k[k], pair)
        version = [c for c in by_k[k] if c.conditioned and c.method and c.method == win.method]
        # Several conditioned runs of the winning method: the one with the highest adherence (FD breaks ties).
        ship_c = max(version, key=lambda c: (c.adherence, -c.fd)) if version and not win.conditioned else win
        shipped.append(ship_c)
        per_k[str(k)] = {
            "winner": win.name,
            "shipped": ship_c.name,
            "candidates": [
                {
                    "name": c.name,
                    "fd": c.fd,
                    "adherence": c.adherence,
                    "one_object": c.one_object,
                    "conditioned": c.conditioned,
                    "dominated_by": beaten.get(c.name),  # None: not in the contest (conditioned)
                }
                for c in by_k[k]
            ],
        }
    if teacher_one_object is None:
        default, why = None, "the teacher's row at its served setting was not measured"
    else:
        default, why = pick_default(shipped, pair, teacher_one_object, margin)
        if default != "teacher":
            default = next(c.shipped_name for c in shipped if c.name == default)
    return {
        "rule": __doc__.split("The rule, ", 1)[1].strip() if __doc__ else "",
        "per_k": per_k,
        "students": [
            {"name": c.shipped_name, "row": c.name, "k": c.k, "model": c.model, "model_sha256": c.model_sha256}
            for c in shipped
        ],
        "default": default,
        "default_why": why,
        "teacher_one_object": teacher_one_object,
        "one_object_margin": margin,
    }


def markdown(decision: Mapping[str, Any]) -> str:
    """The decision as a section of `results/distill.md`."""
    lines = [
        "\n## Winners and the default model\n",
        "The rule (`distill/reports/winners.py`): at each K, B dominates A when B is better on FD or overall "
        "adherence by a paired interval that excludes 0 and worse on neither; the winner is the "
        "undominated method with the highest adherence, among the students distilled at this w; what "
        "ships is the winner's guidance-conditioned version where the table has one. The default model "
        "is the fewest-step shipped student no other shipped student dominates, if its one-object "
        f"adherence is within {decision['one_object_margin']} of the teacher's at its served setting.\n",
        "| K | student | FD | adherence | 1 obj | dominated by | winner | ships |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    names = {s["row"]: s["name"] for s in decision["students"] if "row" in s}
    for k, block in decision["per_k"].items():
        for c in block["candidates"]:
            ships = block.get("shipped", block["winner"]) == c["name"]
            by = c.get("dominated_by", [])
            by = "(conditioned: not in the contest)" if by is None else ", ".join(by) or "-"
            lines.append(
                f"| {k} | {c['name']} | {c['fd']:.1f} | {c['adherence']:.3f} | {c['one_object']:.3f} | {by} "
                f"| {'yes' if c['name'] == block['winner'] else ''} "
                f"| {'as ' + names.get(c['name'], c['name']) if ships else ''} |"
            )
    lines.append(f"\nDefault model: **{decision['default']}**: {decision['default_why']}.\n")
    return "\n".join(lines) + "\n"


def write(decision: Mapping[str, Any], out_dir: str | Path) -> Path:
    path = Path(out_dir) / WINNERS_FILE
    path.write_text(json.dumps(decision, indent=2) + "\n")
    return path


def ship(winners: str | Path, out_dir: str | Path, allow_fixed_guidance: bool = False) -> list[Path]:
    """Copy each winner's packed student into `out_dir/<name>` (the committed default students),
    checking that the weights are the ones the table measured: a retrained run under the same
    directory would otherwise ship unmeasured weights under the measured name. A student distilled
    at one w is refused unless `allow_fixed_guidance`: its bundle accepts that w only, so as a
    default it would make the service refuse the guidance scales it offers."""
    decision = json.loads(Path(winners).read_text())
    shipped = []
    for s in decision["students"]:
        src = Path(s["model"])
        info = student_info(src) or {}
        lo, _, hi = info.get("guidance", [None, None, None])
        if lo is not None and lo == hi and not allow_fixed_guidance:
            raise ValueError(
                f"{s['name']}: distilled at a fixed w = {lo:g}, so it would serve that guidance only; ship its "
                "guidance-conditioned version (or pass --allow-fixed-guidance)"
            )
        weights = src / PACKED_WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(
                f"{s['name']}: {src} is missing; the table's runs are under runs/ (make results-distill trains them)"
            )
        digest = sha256_file(weights)
        if digest != s["model_sha256"]:
            raise ValueError(
                f"{s['name']}: {weights} has sha256 {digest[:12]}, the table measured {s['model_sha256'][:12]}; "
                "rerun `fewstep eval distill-table` so that the decision is about these weights"
            )
        dst = Path(out_dir) / s["name"]
        if dst.resolve() == src.resolve():  # a committed student the table scored where it lies
            log.info("%s: already shipped (%s), the weights the table measured", s["name"], dst)
            shipped.append(dst)
            continue
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(src, dst)
        log.info("shipped %s from %s", s["name"], src)
        shipped.append(dst)
    return shipped
