"""Shortcut models (`--method shortcut`): K. Frans, D. Hafner, S. Levine, P. Abbeel, "One Step
Diffusion via Shortcut Models", 2024 (arXiv 2410.12557), warm-started from the teacher.

One student serves every power-of-two step count up to the finest, K_max = `steps`. Besides
(z_t, t, c, w) the network takes the step size d of the sampler it runs in (d = 1/K on the uniform
K-step grid: `fewstep.networks.UNet`'s zero-initialised log2 step-size embedding, so the warm start
is exactly the teacher at every d). The sampler is the shared DDIM one (`fewstep.sampler`), run
through the student's x-prediction with d = 1/K fed as a network input: no new update rule.

One update (per example: a level K in {1, 2, ..., K_max}, d = 1/K, a grid index i, t = 1 - i/K):

    x, c ~ data; w ~ U[guidance_min, guidance_max]; z_t = alpha_t x + sigma_t eps
    K = K_max (the finest d):  x_target = x_hat_teacher^w(z_t, t, c)               (the base case)
    K < K_max:                 z' = DDIM_{t -> t - d/2}(z_t, sg x_hat(z_t, t, c, w, d/2))
                               z'' = DDIM_{t - d/2 -> t - d}(z', sg x_hat(z', t - d/2, c, w, d/2))
                               x_target = invDDIM_{t -> t - d}(z'', z_t)             (self-consistency)
    L = mean_b max(SNR_t, 1) |x_target - x_hat(z_t, t, c, w, d)|^2

The self-consistency target is the x for which one student step of size d from z_t lands where two
of its own steps of size d/2 land (`fewstep.sampler.ddim_x_for`, as in progressive distillation's
x_tilde; the same truncated-SNR weight, `distill.methods.progressive.pd_loss`), with the gradient
stopped through the target. The paper's base case is the flow-matching loss at d = 0; here the
finest level regresses onto the guided teacher's x prediction, which distils guidance into the w
input like every student here and makes the finest level the teacher's K_max-step DDIM. At the
fixed point every level K is K_max / K teacher steps composed (the toy test checks this).

Levels are drawn per example, uniformly (or the finest with probability `base_fraction`); times
are the sampler's own grid points (`fewstep.schedule.step_plan`), so the student is trained on the
very (t, d) pairs it is sampled at.

Cost per update of batch B with B_0 examples at the finest level: one guided teacher pass on them
(2 B_0 images), two target passes of the student on the others (2 (B - B_0)), one student pass (B)
and its backward (B).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.kit.config import ConfigError
from distill.kit.diffusion import forward_process, per_example, times
from distill.kit.guidance import TextCond
from distill.methods.baseline import BaselineRun
from distill.methods.config import ShortcutConfig
from distill.methods.progressive import pd_loss
from distill.methods.student import make_student
from fewstep.networks import Denoiser
from fewstep.sampler import ddim_step, ddim_x_for
from fewstep.schedule import step_plan


def step_counts(finest: int) -> list[int]:
    """The step counts a shortcut student of finest K serves: 1, 2, 4, ..., K."""
    if finest < 1 or finest & (finest - 1):
        raise ConfigError(f"shortcut: the finest K must be a power of two, not {finest}")
    return [1 << j for j in range(int(math.log2(finest)) + 1)]


def draw_levels(gen: torch.Generator, batch: int, finest: int, base_fraction: float | None) -> np.ndarray:
    """Each example's K: the finest with probability `base_fraction` (None: 1 / number of levels),
    else one of the coarser counts uniformly."""
    counts = step_counts(finest)
    p_base = 1.0 / len(counts) if base_fraction is None else base_fraction
    u = torch.rand(batch, generator=gen, device=gen.device).cpu().numpy()
    coarse = counts[:-1]
    pick = torch.randint(len(coarse), (batch,), generator=gen, device=gen.device).cpu().numpy()
    return np.where(u < p_base, finest, np.asarray(coarse)[pick])


@dataclass(frozen=True)
class Grid:
    """Per-example step coefficients (float64, (B,)) of step i on example b's K-step grid, and of
    its two half steps on the 2K-step grid: t -> m -> s, with m = t - d/2 and s = t - d."""

    t: np.ndarray
    m: np.ndarray
    s: np.ndarray
    alpha_t: np.ndarray
    sigma_t: np.ndarray
    alpha_m: np.ndarray
    sigma_m: np.ndarray
    alpha_s: np.ndarray
    sigma_s: np.ndarray

    @staticmethod
    def at(k: np.ndarray, i: np.ndarray) -> Grid:
        plans = {int(n): (step_plan(int(n)), step_plan(2 * int(n))) for n in np.unique(k)}
        rows = []
        for n, j in zip(np.asarray(k), np.asarray(i), strict=True):
            one, half = plans[int(n)]
            a = 2 * j  # the first half step; the second, 2 j + 1, ends at one.s[j]
            rows.append((one.t[j], half.s[a], one.s[j], one.alpha_t[j], one.sigma_t[j], half.alpha_s[a],
                         half.sigma_s[a], one.alpha_s[j], one.sigma_s[j]))  # fmt: skip
        return Grid(*(np.array(col, np.float64) for col in zip(*rows, strict=True)))


def shortcut_target(denoise, z_t: torch.Tensor, k: np.ndarray, grid: Grid, cond: Any, w: Any) -> torch.Tensor:
    """x_target of a step of size d = 1/k_b from z_t: two steps of size d/2 by `denoise(z, t, cond,
    w, d)` (the student, without gradients), expressed as the x of one DDIM step to the same point."""

    def col(v: np.ndarray) -> torch.Tensor:
        return per_example(v, z_t)

    half = torch.as_tensor(0.5 / np.asarray(k, np.float64), dtype=torch.float32, device=z_t.device)
    x1 = denoise(z_t, times(grid.t, z_t), cond, w, half)
    z_m = ddim_step(z_t, x1, col(grid.alpha_t), col(grid.sigma_t), col(grid.alpha_m), col(grid.sigma_m))
    x2 = denoise(z_m, times(grid.m, z_t), cond, w, half)
    z_s = ddim_step(z_m, x2, col(grid.alpha_m), col(grid.sigma_m), col(grid.alpha_s), col(grid.sigma_s))
    return ddim_x_for(z_t, z_s, col(grid.alpha_t), col(grid.sigma_t), col(grid.alpha_s), col(grid.sigma_s))


def rows(cond: TextCond, index: torch.Tensor) -> TextCond:
    """The text conditioning of the examples `index`."""
    return TextCond(cond.states[index], cond.mask[index], cond.null_states[index], cond.null_mask[index])


class ShortcutRun(BaselineRun):
    eval_keys = ("teacher_forward", "target_forward", "student_forward", "backward")

    def __init__(self, cfg: ShortcutConfig, teacher_path: str | Path, device: torch.device) -> None:
        super().__init__(cfg, teacher_path, device)
        step_counts(cfg.steps)
        # The baseline's student lacks the step-size input: this method's student has it.
        self.student = make_student(self.teacher, cfg.seed, step_size_input=True)
        self.opt = self.new_optimizer()
        self.ema = self._frozen_copy(self.student) if cfg.ema_decay > 0 else None

    def student_x(self, net: Denoiser, z, t, cond: TextCond, w, d, key: str = "student_forward") -> torch.Tensor:
        """The shortcut network's x prediction at step size d (one image a pass)."""
        self.count(key, z.shape[0])
        with self.autocast():
            return net(z, t, cond.states, cond.mask, w, d).float()

    def target_x(self, z, t, cond: TextCond, w, d) -> torch.Tensor:
        with torch.no_grad():
            return self.student_x(self.student, z, t, cond, w, d, "target_forward")

    def iteration(self, batches, step: int) -> dict[str, float]:
        cfg = self.cfg
        x, cond, w = self.data(next(batches))
        batch = x.shape[0]
        k = draw_levels(self.gen, batch, cfg.steps, cfg.base_fraction)
        u = torch.rand(batch, generator=self.gen, device=self.device).cpu().numpy()
        i = np.minimum((u * k).astype(np.int64), k - 1)  # a grid index on each example's own K-step grid
        grid = Grid.at(k, i)
        z_t = forward_process(x, per_example(grid.alpha_t, x), per_example(grid.sigma_t, x), self.randn(x))
        target = torch.empty_like(x)
        base = torch.as_tensor(np.flatnonzero(k == cfg.steps), device=x.device)
        coarse = torch.as_tensor(np.flatnonzero(k != cfg.steps), device=x.device)
        t_in = times(grid.t, x)
        if base.numel():
            target[base] = self.teacher_x(z_t[base], t_in[base], rows(cond, base), w[base])
        if coarse.numel():
            ci = coarse.cpu().numpy()
            sub = Grid(*(getattr(grid, f)[ci] for f in Grid.__dataclass_fields__))
            with torch.no_grad():
                target[coarse] = shortcut_target(self.target_x, z_t[coarse], k[ci], sub, rows(cond, coarse), w[coarse])
        d = torch.as_tensor(1.0 / k, dtype=torch.float32, device=x.device)
        x_hat = self.student_x(self.student, z_t, t_in, cond, w, d)
        loss = pd_loss(x_hat, target, grid.t)
        norm = self.update(loss, self.lr_at(step), batch)
        err = (x_hat.detach() - target).pow(2).flatten(1).mean(1)
        # The RMS x error of each level K = 1, 2, ..., K_max (NaN where no example drew it: the
        # logged window's mean skips it, `distill.methods.runloop.aggregate`).
        by_k = [float(err[torch.as_tensor(k == n)].mean().sqrt()) if (k == n).any() else float("nan")
                for n in step_counts(cfg.steps)]  # fmt: skip
        return {"loss": loss.item(), "grad_norm": norm, "x_rms_by_k": by_k}

    def summary_extra(self) -> dict[str, Any]:
        return {"steps_supported": step_counts(self.cfg.steps)}
