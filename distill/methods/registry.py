"""The distillation methods of `fewstep distill`, in one place: each name (spelled once, in
`distill.methods.config`) with its run class and its config type, and `distill`, which runs one.

    mm-alt    moment matching, alternating student and auxiliary updates  (distill.methods.mm_alt)
    mm-param  moment matching in parameter space, through the teacher's
              preconditioned training gradient                            (distill.methods.mm_param)
    pd        progressive distillation, halving the teacher's DDIM steps  (distill.methods.progressive)
    cd        consistency distillation on the teacher's DDIM grid         (distill.methods.consistency)
    shortcut  shortcut model: one student for every power-of-two K        (distill.methods.shortcut)
    add       adversarial diffusion distillation                         (distill.methods.adversarial)
    emd       one-step distribution matching (DMD/DMD2, EM distillation's
              practical relative): a fake score on generator samples      (distill.methods.emd)

Every run class subclasses `distill.methods.runloop.RunBase` and is built as `run(cfg, teacher_path,
device)`; the loop, checkpoints, run directory and packed student are `distill.methods.runloop.run_loop`'s,
so every method resumes, time-boxes, logs and packs the same way. A new method adds its name to
`METHOD_NAMES`, its config type (a `DistillConfig` subclass with its own settings only) to
`distill.methods.config`, and its run class and config here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from distill.methods.adversarial import AddRun
from distill.methods.config import (
    ADD,
    CD,
    EMD,
    METHOD_NAMES,
    MM_ALT,
    MM_PARAM,
    PD,
    SHORTCUT,
    AddConfig,
    CdConfig,
    DistillConfig,
    EmdConfig,
    MmAltConfig,
    MmParamConfig,
    PdConfig,
    ShortcutConfig,
)
from distill.methods.consistency import ConsistencyRun
from distill.methods.emd import EmdRun
from distill.methods.mm_alt import MmAltRun
from distill.methods.mm_param import MmParamRun
from distill.methods.progressive import ProgressiveRun
from distill.methods.runloop import RunBase, RunOptions, run_loop
from distill.methods.shortcut import ShortcutRun


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
        Method(MM_ALT, MmAltRun, MmAltConfig, "moment matching, alternating student and auxiliary updates"),
        Method(MM_PARAM, MmParamRun, MmParamConfig, "moment matching through the teacher's training gradient"),
        Method(PD, ProgressiveRun, PdConfig, "progressive distillation (DDIM student)"),
        Method(CD, ConsistencyRun, CdConfig, "consistency distillation (DDIM student)"),
        Method(EMD, EmdRun, EmdConfig, "one-step distribution matching (DMD: fake score on generator samples)"),
        Method(SHORTCUT, ShortcutRun, ShortcutConfig, "shortcut model: every power-of-two K up to steps, one student"),
        Method(ADD, AddRun, AddConfig, "adversarial diffusion distillation (teacher-feature discriminator), K = 1-4"),
    )
}
if tuple(METHODS) != METHOD_NAMES:  # a name without a run class, or a run class without a name
    raise ImportError(f"distill.methods.registry lists {tuple(METHODS)}, DistillConfig allows {METHOD_NAMES}")


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
