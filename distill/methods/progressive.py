"""Progressive distillation (`--method pd`): T. Salimans and J. Ho, "Progressive Distillation for
Fast Sampling of Diffusion Models", ICLR 2022 (arXiv 2202.00512), Algorithm 2.

Halving. The teacher's DDIM sampler with N_0 = `teacher_steps` steps is distilled in S stages,
N_0 -> N_0 / 2 -> ... -> K = `steps` (N_0 = K 2^S). Stage j trains a student with n_j = N_0 / 2^(j+1)
steps to match two DDIM steps of its teacher with one: the teacher of stage 0 is the frozen teacher
with classifier-free guidance at the example's w; the teacher of stage j + 1 is a frozen copy of the
student of stage j (its EMA when `ema_decay` > 0), which keeps its guidance input, and the next
student starts from it. Each stage is a fresh optimisation: new Adam state, the learning rate
warmed up over `warmup` updates and then a cosine decay to `min_lr_ratio * lr` at the end of the
stage (the schedule family every method shares, `distill.methods.runloop.lr_schedule`; per stage here rather
than over the whole run because each stage starts a new student from a new teacher).
`iters` is split evenly over the stages (the first `iters mod S` stages get one more update); a
stage left with no updates (iters < S) hands its teacher on unchanged.

One update (Algorithm 2, on the uniform grid of `fewstep.schedule.time_grid`):

    x, c ~ data; w ~ U[guidance_min, guidance_max]; i ~ U{0, ..., n - 1}; t = t_i = 1 - i / n
    z_t = alpha_t x + sigma_t eps
    t' = t - 1/(2n), t'' = t - 1/n                          (the teacher's 2n-step grid)
    z_t'  = DDIM_{t -> t'}(z_t,  x_hat_teacher(z_t,  t,  c, w))
    z_t'' = DDIM_{t' -> t''}(z_t', x_hat_teacher(z_t', t', c, w))
    x_tilde = (z_t'' - (sigma_t'' / sigma_t) z_t) / (alpha_t'' - (sigma_t'' / sigma_t) alpha_t)
    L = max(SNR_t, 1) |x_tilde - x_hat_student(z_t, t, c, w)|^2        (SNR_t = alpha_t^2 / sigma_t^2)

x_tilde is the x for which one student DDIM step from z_t lands exactly on the teacher's two-step
z_t'' (`fewstep.sampler.ddim_x_for`, the inverse of `ddim_step`); the weighting is the paper's
"truncated SNR" weighting (Section 4), i.e. the x-space error with the eps-space weight capped below
at 1. Coefficients come from `fewstep.schedule.step_plan(2n)` in float64.

The final student is sampled with K-step DDIM (`fewstep.sampler.ddim_sample` through its
x-prediction); its packed config records `"sampler": "ddim"`.

Cost per update of batch B: stage 0: 2 guided teacher passes (4B images) + 1 student pass (B) and
its backward (B); later stages: 2 stage-teacher passes (2B) + B + B backward. The summary lists
these per stage (`stages`).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.kit.config import ConfigError
from distill.kit.diffusion import forward_process, per_example, times
from distill.methods.baseline import BaselineRun
from distill.methods.config import PdConfig
from distill.methods.runloop import lr_schedule
from fewstep.sampler import ddim_step, ddim_x_for
from fewstep.schedule import logsnr, step_plan

log = logging.getLogger(__name__)


def stage_steps(k: int, teacher_steps: int) -> list[int]:
    """The students' step counts, stage by stage: [N_0 / 2, N_0 / 4, ..., K]."""
    ratio = teacher_steps // k
    if teacher_steps <= k or teacher_steps % k or ratio & (ratio - 1):
        raise ConfigError(f"pd: teacher_steps ({teacher_steps}) must be steps ({k}) times a power of two >= 2")
    return [teacher_steps >> (j + 1) for j in range(int(math.log2(ratio)))]


def stage_lengths(iters: int, stages: int) -> list[int]:
    """`iters` split evenly over the stages; the first `iters mod stages` get one more update."""
    return [iters // stages + (1 if j < iters % stages else 0) for j in range(stages)]


def stage_at(step: int, lengths: list[int]) -> tuple[int, int]:
    """(stage, update within the stage) of global update `step`."""
    start = 0
    for j, n in enumerate(lengths):
        if step < start + n:
            return j, step - start
        start += n
    return len(lengths) - 1, step - (start - lengths[-1])


def two_step_target(denoise, z_t: torch.Tensor, i: np.ndarray, n: int, cond: Any, w: Any) -> torch.Tensor:
    """x_tilde of Salimans and Ho (2022), Algorithm 2: two teacher DDIM steps expressed as one x.

    `denoise(z, t, cond, w)` is the teacher's x-prediction (the sampler's callable); `i` (B,) are the
    student's step indices on its n-step grid, so example b starts at t = 1 - i_b / n and the teacher
    takes steps 2 i_b and 2 i_b + 1 of the 2n-step grid. One `ddim_step` from z_t with the returned x
    lands on the teacher's z_t''."""
    plan = step_plan(2 * n)
    a, b = 2 * np.asarray(i), 2 * np.asarray(i) + 1

    def col(v: np.ndarray) -> torch.Tensor:
        return per_example(v, z_t)

    z = z_t
    for j in (a, b):
        x_hat = denoise(z, times(plan.t[j], z_t), cond, w)
        z = ddim_step(z, x_hat, col(plan.alpha_t[j]), col(plan.sigma_t[j]), col(plan.alpha_s[j]), col(plan.sigma_s[j]))
    return ddim_x_for(z_t, z, col(plan.alpha_t[a]), col(plan.sigma_t[a]), col(plan.alpha_s[b]), col(plan.sigma_s[b]))


def truncated_snr_weight(t: np.ndarray) -> np.ndarray:
    """w(t) = max(alpha_t^2 / sigma_t^2, 1) (Salimans and Ho 2022, Section 4), float64."""
    return np.maximum(np.exp(logsnr(t)), 1.0)


def pd_loss(x_student: torch.Tensor, x_tilde: torch.Tensor, t: np.ndarray) -> torch.Tensor:
    """mean_b w(t_b) mean |x_tilde_b - x_hat_b|^2 with the truncated-SNR weight."""
    weight = torch.as_tensor(truncated_snr_weight(t), device=x_student.device).to(x_student.dtype)
    return (weight * (x_student - x_tilde.detach()).pow(2).flatten(1).mean(1)).mean()


class ProgressiveRun(BaselineRun):
    eval_keys = ("teacher_forward", "stage_teacher_forward", "student_forward", "backward")

    def __init__(self, cfg: PdConfig, teacher_path: str | Path, device: torch.device) -> None:
        super().__init__(cfg, teacher_path, device)
        self.steps_per_stage = stage_steps(cfg.steps, cfg.teacher_steps)
        self.lengths = stage_lengths(cfg.iters, len(self.steps_per_stage))
        if 0 in self.lengths:
            log.warning("pd: %d updates for %d stages: some stages get none", cfg.iters, len(self.lengths))
        self.stage = 0
        self.stage_teacher = None  # stage >= 1: the previous student, frozen
        self.stage_evals = [dict.fromkeys(self.eval_keys, 0) for _ in self.lengths]

    def count(self, key: str, images: int) -> None:
        super().count(key, images)
        self.stage_evals[self.stage][key] += images

    def begin_stage(self, stage: int) -> None:
        """The trained student (its EMA if on) becomes the frozen teacher and the next student's start."""
        source = self.packed()
        self.stage_teacher = self._frozen_copy(source)
        self.student.load_state_dict(source.state_dict())
        self.opt = self.new_optimizer()
        if self.ema is not None:
            self.ema = self._frozen_copy(self.student)
        self.stage = stage
        log.info("pd stage %d: %d -> %d steps", stage, 2 * self.steps_per_stage[stage], self.steps_per_stage[stage])

    def lr_at(self, step: int) -> float:
        """Per stage (each is a fresh optimisation): linear warm-up over `warmup` updates, then a cosine
        decay to `min_lr_ratio * lr` at the stage's end (`distill.methods.runloop.lr_schedule`)."""
        stage, local = stage_at(step, self.lengths)
        return lr_schedule(local, self.lengths[stage], self.cfg)

    def stage_teacher_x(self, z, t, cond, w) -> torch.Tensor:
        assert self.stage_teacher is not None
        with torch.no_grad():
            return self.net_x(self.stage_teacher, z, t, cond, w, "stage_teacher_forward")

    def iteration(self, batches, step: int) -> dict[str, float]:
        stage, _ = stage_at(step, self.lengths)
        if stage != self.stage:
            self.begin_stage(stage)
        n = self.steps_per_stage[stage]
        x, cond, w = self.data(next(batches))
        i = self.randint(n, x.shape[0])
        plan = step_plan(n)  # the student's grid: t_i = 1 - i / n
        t = plan.t[i]
        z_t = forward_process(x, per_example(plan.alpha_t[i], x), per_example(plan.sigma_t[i], x), self.randn(x))
        teacher = self.teacher_x if stage == 0 else self.stage_teacher_x
        with torch.no_grad():
            x_tilde = two_step_target(teacher, z_t, i, n, cond, w)
        x_hat = self.net_x(self.student, z_t, times(t, x), cond, w)
        loss = pd_loss(x_hat, x_tilde, t)
        norm = self.update(loss, self.lr_at(step), x.shape[0])
        return {"loss": loss.item(), "grad_norm": norm, "stage": float(stage), "student_steps": float(n)}

    def sample_steps(self) -> int:
        return self.steps_per_stage[self.stage]

    def extra_networks(self) -> dict[str, Any]:
        nets = super().extra_networks()
        if self.stage_teacher is not None:
            nets["stage_teacher"] = self.stage_teacher
        return nets

    def state(self) -> dict[str, Any]:
        return {"stage": self.stage, "lengths": self.lengths, "stage_evals": self.stage_evals}

    def set_state(self, state: dict[str, Any]) -> None:
        if state.get("lengths", self.lengths) != self.lengths:
            raise ConfigError("pd: iters fixes the stage schedule; it cannot change when a run resumes")
        self.stage = int(state.get("stage", 0))
        self.stage_evals = state.get("stage_evals", self.stage_evals)
        if self.stage > 0:
            self.stage_teacher = self._frozen_copy(self.student)  # weights come from the checkpoint

    def summary_extra(self) -> dict[str, Any]:
        stages = [
            {"stage": j, "teacher_steps": 2 * n, "student_steps": n, "iters": length, **ev}
            for j, (n, length, ev) in enumerate(zip(self.steps_per_stage, self.lengths, self.stage_evals, strict=True))
        ]
        return {"teacher_steps": self.cfg.teacher_steps, "stages": stages}
