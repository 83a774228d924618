"""mm-param (`fewstep distill --method mm-param`): moment matching in parameter space (Salimans et
al. 2024, section 3.2): no auxiliary network; the student moves along J_theta nu, where nu is the
gradient of the teacher's own (v-space, capped) training loss on the student's samples,
preconditioned with the teacher's Adam second moments (fp32, `fewstep pack --estimate-adam-v`). The
maths is `distill.methods.moment_matching`'s; what every moment-matching run shares,
`distill.methods.moment_matching_run`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill.kit.checkpoint import load_adam_second_moments
from distill.kit.config import ConfigError
from distill.kit.diffusion import posterior_draw
from distill.kit.guidance import TextCond, guided
from distill.methods.config import MmParamConfig
from distill.methods.moment_matching import (
    functional,
    preconditioned_direction,
    surrogate,
    teacher_jvp,
    teacher_loss,
)
from distill.methods.moment_matching_run import MomentMatchingRun
from fewstep.networks import Denoiser


class MmParamRun(MomentMatchingRun):
    """mm-param: the student and the teacher's Adam second moments; `mm_update` is one student
    update from two minibatches (A: the teacher's gradient; B: the surrogate along J nu)."""

    cfg: MmParamConfig

    def _init_method(self, teacher_path: str | Path) -> None:
        device = self.device
        self.adam_v = {k: v.to(device) for k, v in load_adam_second_moments(teacher_path).items()}
        missing = set(dict(self.teacher.named_parameters())) - set(self.adam_v)
        if missing:
            raise ConfigError(f"the teacher's Adam second moments lack {sorted(missing)[:3]}")

    @classmethod
    def batches_per_update(cls, cfg: MmParamConfig) -> int:
        return 2

    def mm_update(self, batches, lr: float) -> dict[str, Any]:
        cfg, teacher = self.cfg, self.teacher
        assert self.adam_v is not None
        params = {k: p.detach().requires_grad_(True) for k, p in teacher.named_parameters()}
        buffers = dict(teacher.named_buffers())
        # Minibatch A: the teacher's training gradient on student samples, preconditioned.
        z_t, cond, w, s, t = self.draw(next(batches))
        with torch.no_grad():
            x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, self.noise(z_t))

        def call(p):
            return lambda *a: torch.func.functional_call(teacher, {**p, **buffers}, a)

        pred = guided(call(params), z_s, s.float(), cond, w)
        self.evals["forward"] += 2 * z_t.shape[0]
        self.evals["backward"] += 2 * z_t.shape[0]
        # G: the gradient of the teacher's own training loss (v-MSE, i.e. x-space weight 1 + SNR, capped).
        nu = preconditioned_direction(teacher_loss(pred, x_tilde, s, cfg.teacher_weight_cap), params, self.adam_v)
        # Minibatch B: the student's surrogate along J_theta nu (forward-mode, one jvp).
        z_t, cond, w, s, t = self.draw(next(batches))
        x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, self.noise(z_t))
        fn = functional(_Guided(teacher, cond, w), z_s, s.float())
        _, direction = teacher_jvp(fn, _prefixed(params), _prefixed(nu))
        self.evals["forward"] += 4 * z_t.shape[0]  # a jvp costs about two forward passes, guided doubles it
        d, signal = self._student_direction(direction, s)
        loss = surrogate(x_tilde, d, "none")  # mm_param_student_loss with the weighting applied above
        norm = self._step(loss, self.student, self.opt, lr, z_t.shape[0])
        gap = direction.pow(2).mean().sqrt().item()
        return {"student_loss": loss.item(), "gap_rms": gap, "grad_norm": norm, **signal}


class _Guided(torch.nn.Module):
    """The guided teacher as a module of (z, t), for `torch.func.functional_call` in the jvp."""

    def __init__(self, teacher: Denoiser, cond: TextCond, w: torch.Tensor) -> None:
        super().__init__()
        self.teacher, self.cond, self.w = teacher, cond, w

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return guided(self.teacher, z, t, self.cond, self.w)


def _prefixed(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"teacher.{k}": v for k, v in params.items()}
