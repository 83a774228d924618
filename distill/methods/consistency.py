"""Multistep consistency distillation (`--method cd`): Y. Song, P. Dhariwal, M. Chen, I. Sutskever,
"Consistency Models", ICML 2023 (arXiv 2303.01469), Algorithm 2 (consistency distillation), in the
multistep form of J. Heek, E. Hoogeboom, T. Salimans, "Multistep Consistency Models", 2024
(arXiv 2403.06807): the time axis is cut into K segments at the K-step grid t_k = 1 - k / K, and the
student learns, within each segment, the map from z_t to the point where the teacher's DDIM ODE
trajectory through z_t meets the segment's lower boundary t_b.

Parameterisation. The student outputs x_hat = f(z_t, t, c, w) and its consistency function is the
DDIM jump to the boundary, F(z_t, t) = DDIM_{t -> t_b}(z_t, x_hat). DDIM_{t_b -> t_b} is the identity,
so the boundary condition F(z_{t_b}, t_b) = z_{t_b} holds by construction (no skip scalings).

Sampling. The multistep consistency sampler (Heek et al., deterministic variant) applies F segment
after segment from z_1 ~ N(0, I): z_{t_{k+1}} = DDIM_{t_k -> t_{k+1}}(z_{t_k}, f(z_{t_k}, t_k)), and
the last segment returns f. That is exactly `fewstep.sampler.ddim_sample` through the student's
x-prediction on the K-step grid, so the student packs with `"sampler": "ddim"` and serves, exports
and evaluates with the shared DDIM sampler.

One update, with N = `teacher_steps` (a multiple of K; n = N / K teacher steps per segment) on the
uniform N-step grid of `fewstep.schedule.step_plan(N)`:

    x, c ~ data; w ~ U[guidance_min, guidance_max]; j ~ U{0, ..., N - 1}
    t = 1 - j / N, s = t - 1 / N, t_b = the segment boundary at or below s (a multiple of 1 / K)
    z_t = alpha_t x + sigma_t eps
    z_s = DDIM_{t -> s}(z_t, x_hat_teacher^w(z_t, t, c))          one guided teacher DDIM step
    z_ref = DDIM_{s -> t_b}(z_s, stopgrad f_target(z_s, s, c, w))   (z_ref = z_s when s = t_b)
    x_target = invDDIM_{t -> t_b}(z_ref, z_t)                      (`fewstep.sampler.ddim_x_for`)
    L = lambda(t) |x_target - f(z_t, t, c, w)|^2

x_target is the x whose DDIM jump from z_t reaches z_ref, so with `cd_weighting = "boundary"`,
lambda(t) = (alpha_b - sigma_b alpha_t / sigma_t)^2 and L = |F(z_t, t) - z_ref|^2: Song et al.'s
d(f_theta(x_{t_{n+1}}), f_theta^-(x_hat_{t_n})) with the squared L2 metric and lambda = 1, measured
where the consistency function lands (for K = 1 this is the usual x-space CD loss). `"x"` uses
lambda = 1 on x. The target network theta^- is an EMA of the student with decay mu = `cd_target_ema`
(Song et al.'s target network); mu = 0, the default, makes it the stop-gradient current student
(as in Song and Dhariwal 2023's improved consistency training and Heek et al.). The N-grid is fixed
(no discretisation curriculum). The teacher's DDIM step is guided at the example's w (as in
guided consistency distillation), the student takes w as an input like every student here.

Cost per update of batch B: one guided teacher pass (2B images), one target pass (B), one student
pass (B) and its backward (B).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.kit.config import ConfigError
from distill.kit.diffusion import forward_process, per_example, times
from distill.methods.baseline import BaselineRun
from distill.methods.config import CdConfig
from distill.methods.runloop import ema_update
from fewstep.sampler import ddim_step, ddim_x_for
from fewstep.schedule import alpha_sigma, step_plan, time_grid


def segment_boundary(j: np.ndarray, k: int, n_total: int) -> np.ndarray:
    """Index on the N-step grid of the lower segment boundary of teacher step j (from t_j to t_{j+1})."""
    if n_total % k:
        raise ConfigError(f"cd: teacher_steps ({n_total}) must be a multiple of steps ({k})")
    per = n_total // k
    return (np.asarray(j) // per + 1) * per


def consistency_target(
    teacher, target, z_t: torch.Tensor, j: np.ndarray, k: int, n_total: int, cond: Any, w: Any
) -> tuple[torch.Tensor, np.ndarray]:
    """(x_target, c) for teacher step j of the N-step grid (see the module docstring).

    `teacher` and `target` are `denoise(z, t, cond, w)` callables (the guided teacher and the
    stop-gradient target network); c = alpha_b - sigma_b alpha_t / sigma_t (float64, per example) is
    the factor by which an x error moves the DDIM jump to the boundary."""
    j = np.asarray(j)
    plan = step_plan(n_total)
    b_idx = segment_boundary(j, k, n_total)
    t_b = time_grid(n_total)[b_idx]
    alpha_b, sigma_b = alpha_sigma(t_b)
    at, st, as_, ss = plan.alpha_t[j], plan.sigma_t[j], plan.alpha_s[j], plan.sigma_s[j]

    def col(v: np.ndarray) -> torch.Tensor:
        return per_example(v, z_t)

    x_teacher = teacher(z_t, times(plan.t[j], z_t), cond, w)
    z_s = ddim_step(z_t, x_teacher, col(at), col(st), col(as_), col(ss))
    x_ref = target(z_s, times(plan.s[j], z_t), cond, w)
    z_jump = ddim_step(z_s, x_ref, col(as_), col(ss), col(alpha_b), col(sigma_b))
    on_boundary = torch.as_tensor(b_idx == j + 1, device=z_t.device).view(-1, 1, 1, 1)
    z_ref = torch.where(on_boundary, z_s, z_jump)
    x_target = ddim_x_for(z_t, z_ref, col(at), col(st), col(alpha_b), col(sigma_b))
    return x_target, alpha_b - sigma_b * at / st


def cd_loss(
    x_student: torch.Tensor, x_target: torch.Tensor, c: np.ndarray, weighting: str = "boundary"
) -> torch.Tensor:
    """mean_b lambda_b mean |x_target_b - x_hat_b|^2; lambda = c^2 ("boundary") or 1 ("x")."""
    err = (x_student - x_target.detach()).pow(2).flatten(1).mean(1)
    if weighting == "boundary":
        err = err * torch.as_tensor(np.asarray(c, np.float64) ** 2, device=err.device).to(err.dtype)
    return err.mean()


class ConsistencyRun(BaselineRun):
    eval_keys = ("teacher_forward", "target_forward", "student_forward", "backward")

    def __init__(self, cfg: CdConfig, teacher_path: str | Path, device: torch.device) -> None:
        super().__init__(cfg, teacher_path, device)
        segment_boundary(np.zeros(1, int), cfg.steps, cfg.teacher_steps)  # validates N / K
        self.target = self._frozen_copy(self.student) if cfg.cd_target_ema > 0 else None

    def target_x(self, z, t, cond, w) -> torch.Tensor:
        with torch.no_grad():
            return self.net_x(self.target or self.student, z, t, cond, w, "target_forward")

    def iteration(self, batches, step: int) -> dict[str, float]:
        cfg = self.cfg
        x, cond, w = self.data(next(batches))
        n = cfg.teacher_steps
        j = self.randint(n, x.shape[0])
        plan = step_plan(n)
        z_t = forward_process(x, per_example(plan.alpha_t[j], x), per_example(plan.sigma_t[j], x), self.randn(x))
        with torch.no_grad():
            x_target, c = consistency_target(self.teacher_x, self.target_x, z_t, j, cfg.steps, n, cond, w)
        x_hat = self.net_x(self.student, z_t, times(plan.t[j], x), cond, w)
        loss = cd_loss(x_hat, x_target, c, cfg.cd_weighting)
        norm = self.update(loss, self.lr_at(step), x.shape[0])
        if self.target is not None:
            ema_update(self.target, self.student, cfg.cd_target_ema)
        x_err = (x_hat.detach() - x_target).pow(2).mean().sqrt().item()
        return {"loss": loss.item(), "x_rms_error": x_err, "grad_norm": norm}

    def extra_networks(self) -> dict[str, Any]:
        nets = super().extra_networks()
        if self.target is not None:
            nets["target"] = self.target
        return nets

    def summary_extra(self) -> dict[str, Any]:
        return {"teacher_steps": self.cfg.teacher_steps, "segment_steps": self.cfg.teacher_steps // self.cfg.steps}
