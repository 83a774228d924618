"""mm-alt (`fewstep distill --method mm-alt`): moment matching with an auxiliary denoiser,
alternating its updates with the student's (Salimans et al. 2024, Algorithm 1; the maths in
`distill.methods.moment_matching`, what every moment-matching run shares in
`distill.methods.moment_matching_run`).

The auxiliary x_hat_phi fits the student's conditional mean E[x_tilde | z_s] (anchored on the
teacher, `aux_loss`), `aux_steps` updates per student update, at `aux_lr` (default: the student's
lr) and with its own weighting (`aux_weighting`: none, the teacher's, or the student's snr-cap);
the student moves E[x_tilde | z_s] toward the guided teacher along x_hat_phi - x_hat_theta.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.kit.diffusion import posterior_draw
from distill.methods.config import MmAltConfig
from distill.methods.moment_matching import aux_loss, surrogate, teacher_weight
from distill.methods.moment_matching_run import MomentMatchingRun
from distill.methods.student import make_student
from fewstep.networks import Denoiser


class MmAltRun(MomentMatchingRun):
    """mm-alt: the student, its auxiliary and their optimisers; `mm_update` is one round of
    `aux_steps` auxiliary updates and one student update."""

    cfg: MmAltConfig

    def _init_method(self, teacher_path: str | Path) -> None:
        cfg = self.cfg
        self.aux = make_student(self.teacher, cfg.seed + 1)
        self.opt_aux = torch.optim.Adam(self.aux.parameters(), lr=cfg.aux_lr or cfg.lr, betas=cfg.betas)

    @classmethod
    def batches_per_update(cls, cfg: MmAltConfig) -> int:
        return cfg.aux_steps + 1

    def method_networks(self) -> dict[str, tuple[Denoiser, torch.optim.Optimizer | None]]:
        return {"aux": (self.aux, self.opt_aux)}

    def mm_update(self, batches, lr: float) -> dict[str, Any]:
        a_losses = [self.aux_update(next(batches), lr) for _ in range(self.cfg.aux_steps)]
        return {"aux_loss": float(np.mean(a_losses)), **self.student_update(next(batches), lr)}

    # -- what a method built on mm-alt's machinery changes (emd: `distill.methods.emd`) --
    def aux_anchor(self) -> float:
        """a, the teacher anchor's weight in the auxiliary's loss (`aux_loss`): 1 here, the
        teacher-anchored auxiliary of Salimans et al. 2024 (Algorithm 1). With 0 the auxiliary is a
        plain denoiser of the student's samples and its update skips the teacher pass."""
        return 1.0

    def weigh_direction(self, x_tilde: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor | None:
        """w(s) d of the student's surrogate when the method weighs fake - real itself (emd: DMD's
        per-example normaliser); None here: the configured `weighting` (`_student_direction`)."""
        return None

    # -- one round --
    def aux_update(self, batch: dict[str, Any], lr: float) -> float:
        """One auxiliary step: fit the student's conditional mean E[x_tilde | z_s], plus `aux_anchor`
        times the teacher anchor (`aux_loss`). Only the auxiliary's parameters change."""
        cfg, aux = self.cfg, self.aux
        anchor = self.aux_anchor()
        z_t, cond, w, s, t = self.draw(batch)
        with torch.no_grad():
            x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, self.noise(z_t))
        target = self._teacher(z_s, s, cond, w) if anchor else None  # no anchor: no teacher pass
        pred = self._student(aux, z_s, s, cond, w)
        cap = {"none": None, "teacher": cfg.teacher_weight_cap, "snr-cap": cfg.snr_cap}[cfg.aux_weighting]
        weight = None if cap is None else teacher_weight(s, cap)  # min(1 + SNR(s), cap)
        loss = aux_loss(pred, x_tilde, target, weight, anchor=anchor)
        self._step(loss, aux, self.opt_aux, (cfg.aux_lr or cfg.lr) * lr / cfg.lr, z_t.shape[0])
        return loss.item()

    def student_update(self, batch: dict[str, Any], lr: float) -> dict[str, Any]:
        """One student step: move E[x_tilde | z_s] toward the guided teacher along x_hat_phi - x_hat_theta
        ("fake minus real"). Only the student changes."""
        z_t, cond, w, s, t = self.draw(batch)
        x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, self.noise(z_t))
        target = self._teacher(z_s, s, cond, w)
        with torch.no_grad():
            fake = self._student(self.aux, z_s, s, cond, w)
        d, signal = self._student_direction(fake - target, s, self.weigh_direction(x_tilde, fake, target))
        loss = surrogate(x_tilde, d, "none")  # mm_alt_student_loss with the weighting applied above
        norm = self._step(loss, self.student, self.opt, lr, z_t.shape[0])
        gap = (fake - target).pow(2).mean().sqrt().item()
        return {"student_loss": loss.item(), "gap_rms": gap, "grad_norm": norm, **signal}
