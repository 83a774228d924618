"""`fewstep eval distill-table`, `distill-guidance` and `ship-students`: the distillation reports and the
default students they pick."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger(__name__)


def _distill_table(args: argparse.Namespace) -> int:
    from distill.reports.distill_table import distill_table

    students = [p.parent for d in args.students for p in sorted(Path(d).glob("**/config.json"))]
    from distill.kit.checkpoint import student_info

    students = sorted({p for p in students if student_info(p) is not None})
    if not students:
        raise ValueError(f"--students: no distilled students under {args.students}")
    sampler, steps = args.teacher_best
    distill_table(
        students, args.teacher, args.guidance, args.n_images, args.out_dir, (sampler, int(steps)),
        progress=not args.no_progress, reuse=not args.fresh, ceiling_dir=args.ceiling_dir, reference=args.reference,
        served_row=args.served_row, regenerate=args.regenerate,
    )  # fmt: skip
    return 0


def _ship_students(args: argparse.Namespace) -> int:
    from distill.reports.winners import ship

    for path in ship(args.winners, args.out, allow_fixed_guidance=args.allow_fixed_guidance):
        log.info("shipped %s", path)
    return 0


def _distill_guidance(args: argparse.Namespace) -> int:
    from distill.reports.distill_table import guidance_compare

    guidance_compare(
        Path(args.student), args.teacher, tuple(args.weights), tuple(args.teacher_steps), args.n_images,
        args.out_dir, progress=not args.no_progress, reuse=not args.fresh,
    )  # fmt: skip
    return 0


def add_commands(ev_sub: argparse._SubParsersAction) -> None:
    dt = ev_sub.add_parser("distill-table", help="students against the teacher at equal steps (results/distill.md)")
    dt.add_argument("--students", nargs="+", required=True, help="directories holding packed students")
    dt.add_argument("--teacher", default="models/teacher")
    dt.add_argument("--guidance", type=float, default=3.0)
    dt.add_argument("--teacher-best", nargs=2, default=["ancestral", "64"], metavar=("SAMPLER", "STEPS"))
    dt.add_argument("--n-images", type=int, default=2000)
    dt.add_argument("--out-dir", default="results")
    dt.add_argument(
        "--ceiling-dir", default=None, help="where the teacher's best row is kept and reused (default: OUT_DIR/ceiling)"
    )
    dt.add_argument("--reference", default="mm-alt", help="the method every other is compared with, pairwise at each K")
    dt.add_argument(
        "--served-row",
        default=None,
        help="the teacher's row at its served setting, the default model's one-object floor "
        "(default: OUT_DIR/teacher/ancestral-16.json)",
    )
    dt.add_argument(
        "--regenerate", default="make results-distill", help="the command the table names as the one regenerating it"
    )
    dt.add_argument("--no-progress", action="store_true")
    dt.add_argument("--fresh", action="store_true", help="re-evaluate rows already measured for the same weights")
    dt.set_defaults(handler=_distill_table)

    dg = ev_sub.add_parser(
        "distill-guidance", help="one student against the teacher at the same w (results/distill_guidance.md)"
    )
    dg.add_argument("--student", required=True, help="a packed student")
    dg.add_argument("--teacher", default="models/teacher")
    dg.add_argument("--weights", type=float, nargs="+", default=[1.0, 2.0, 3.0, 4.0, 5.0])
    dg.add_argument("--teacher-steps", type=int, nargs="+", default=[8, 32], help="the teacher's ancestral steps")
    dg.add_argument("--n-images", type=int, default=2000)
    dg.add_argument("--out-dir", default="results")
    dg.add_argument("--no-progress", action="store_true")
    dg.add_argument("--fresh", action="store_true", help="re-evaluate rows already measured for the same weights")
    dg.set_defaults(handler=_distill_guidance)

    ss = ev_sub.add_parser(
        "ship-students",
        help="copy each K's winner of the distillation table into models/students (distill/reports/winners.py)",
    )
    ss.add_argument("--winners", default="results/distill_winners.json", help="written by `fewstep eval distill-table`")
    ss.add_argument("--out", default="models/students")
    ss.add_argument(
        "--allow-fixed-guidance", action="store_true", help="ship students distilled at one w (they serve only it)"
    )
    ss.set_defaults(handler=_ship_students)
