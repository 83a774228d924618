"""The distillation methods of `fewstep distill`, in one place: each name (spelled once, in
`distill.distill_config`) with its run class and its config type, and `distill`, which runs one.

    mm-alt    moment matching, alternating student and auxiliary updates  (distill.distiller)
    mm-param  moment matching in parameter space, through the teacher's
              preconditioned training gradient                            (distill.distiller)
    pd        progressive distillation, halving the teacher's DDIM steps  (distill.progressive)
    cd        consistency distillation on the teacher's DDIM grid         (distill.consistency)

Every run class subclasses `distill.runloop.RunBase` and is built as `run(cfg, teacher_path,
device)`; the loop, checkpoints, run directory and packed student are `distill.runloop.run_loop`'s,
so every method resumes, time-boxes, logs and packs the same way. A new method adds its name to
`METHOD_NAMES`, its class here, and the keys it uses to `DistillConfig.ignored_keys`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.consistency import ConsistencyRun
from distill.distill_config import CD, METHOD_NAMES, MM_ALT, MM_PARAM, PD, DistillConfig
from distill.distiller import Distiller
from distill.progressive import ProgressiveRun
from distill.runloop import RunBase, RunOptions, run_loop


@dataclass(frozen=True)
class Method:
    """One distillation method: its run class and the config type it reads."""

    name: str
    run: type[RunBase]
    config: type[DistillConfig]
    summary: str


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method(MM_ALT, Distiller, DistillConfig, "moment matching, alternating student and auxiliary updates"),
        Method(MM_PARAM, Distiller, DistillConfig, "moment matching through the teacher's training gradient"),
        Method(PD, ProgressiveRun, DistillConfig, "progressive distillation (DDIM student)"),
        Method(CD, ConsistencyRun, DistillConfig, "consistency distillation (DDIM student)"),
    )
}
if tuple(METHODS) != METHOD_NAMES:  # a name without a run class, or a run class without a name
    raise ImportError(f"distill.methods lists {tuple(METHODS)}, DistillConfig allows {METHOD_NAMES}")


def distill(
    cfg: DistillConfig, teacher: str | Path, out: str | Path, options: RunOptions | None = None
) -> dict[str, Any]:
    """Run (or resume) the distillation `cfg` describes from the packed `teacher` into `out`; pack
    the student when done (or, with `options.pack_unfinished`, whatever it reached when `stop_at`
    or the `max_seconds` time box ended the run). Returns the run's summary. Default options:
    `RunOptions()` (resume, progress bar, run to the end)."""
    method = METHODS[cfg.method]
    if not isinstance(cfg, method.config):
        raise TypeError(f"{cfg.method} reads a {method.config.__name__}, not a {type(cfg).__name__}")
    return run_loop(method.run, cfg, teacher, out, options or RunOptions())
