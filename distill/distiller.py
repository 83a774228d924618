"""The moment-matching runs of `fewstep distill` (mm-alt, mm-param): few-step students from the frozen
teacher. Every method, the pd and cd baselines included, is listed in `distill.methods`.

Students (and the mm-alt auxiliary) start as copies of the teacher with a zero-initialised
guidance-scale input (`UNetConfig.guidance_input`), so step 0 reproduces the teacher's conditional
prediction; w is drawn per example from [guidance_min, guidance_max] and the teacher target uses
classifier-free guidance at that w (Meng et al. 2023): one student then serves any w in the range
at one network evaluation per step.

The loop, the run directory (mirroring `fewstep train`: config.json, metrics.jsonl, samples/, an
atomic checkpoint/ that resumes exactly: student, auxiliary, EMA, both optimisers, the s-bin
normaliser, RNG, data position) and the packed student are `distill.runloop`'s, shared with the pd
and cd baselines.

Options (`DistillConfig`; the maths in `distill.moment_matching`): the student's weighting w(s)
(`weighting`), the auxiliary's (`aux_weighting`), the time draws (`time_sampling`), auxiliary steps
per student step (`aux_steps`), an EMA of the student (`ema_decay`: `student/` packs the EMA,
`student-raw/` the raw weights). mm-param's teacher gradient G is the gradient of the teacher's own
(v-space, capped) training loss, preconditioned with its Adam second moments. Each logged row of
metrics.jsonl holds the per-s-bin signal (`s_bins` equal bins of s in [0, 1]): `sbin_gap`, the mean
squared auxiliary-teacher gap |x_hat_phi - x_hat_theta|^2 (mm-param: |J nu|^2) per bin, and
`sbin_energy`, each bin's share of the student's gradient energy sum |w(s) d|^2 (null: no example).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.checkpoint import load_adam_second_moments, load_denoiser
from distill.config import ConfigError
from distill.denoise import TextCond, encode_cond
from distill.distill_config import MM_ALT, MM_PARAM, DistillConfig
from distill.moment_matching import (
    SBinNormaliser,
    aux_loss,
    diffuse,
    functional,
    per_bin,
    posterior_draw,
    preconditioned_direction,
    sample_times,
    surrogate,
    teacher_jvp,
    teacher_loss,
    teacher_weight,
    weighted_direction,
)
from distill.runloop import RunBase, ema_update, lr_schedule
from distill.student import guided, make_student
from distill.text import TextEncoder
from fewstep.networks import Denoiser

log = logging.getLogger(__name__)
FORMAT = "fewstep-distill-1"


class Distiller(RunBase):
    """The moment-matching run (mm-alt, mm-param): its networks, optimisers and counters;
    `iteration()` is one student update. The loop, checkpoints and packing are `distill.runloop`'s."""

    format = FORMAT

    def __init__(self, cfg: DistillConfig, teacher_path: str | Path, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.teacher, self.tcfg = load_denoiser(teacher_path, device=device)
        if self.teacher.cfg.guidance_input:
            raise ConfigError("--teacher must be a teacher (no guidance input), not a student")
        self.encoder = TextEncoder(self.tcfg.text, device)
        self.student = make_student(self.teacher, cfg.seed)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.aux = self.opt_aux = None
        self.adam_v: dict[str, torch.Tensor] | None = None
        if cfg.method == MM_ALT:
            self.aux = make_student(self.teacher, cfg.seed + 1)
            self.opt_aux = torch.optim.Adam(self.aux.parameters(), lr=cfg.aux_lr or cfg.lr, betas=cfg.betas)
        elif cfg.method == MM_PARAM:
            self.adam_v = {k: v.to(device) for k, v in load_adam_second_moments(teacher_path).items()}
            missing = set(dict(self.teacher.named_parameters())) - set(self.adam_v)
            if missing:
                raise ConfigError(f"the teacher's Adam second moments lack {sorted(missing)[:3]}")
        else:
            raise ConfigError(f"method: {cfg.method!r} is not implemented by the moment-matching runner")
        self.ema = copy.deepcopy(self.student).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
        self.normaliser = SBinNormaliser(cfg.s_bins, cfg.sbin_decay) if cfg.weighting == "sbin" else None
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(int(np.random.SeedSequence([cfg.seed, 11]).generate_state(1)[0]))
        self.evals: dict[str, int] = {"forward": 0, "backward": 0}  # image-network passes

    # -- data --
    def draw(self, batch: dict[str, Any]) -> tuple[torch.Tensor, TextCond, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, dev = self.cfg, self.device
        x = batch["image"].to(dev)
        b = x.shape[0]
        cond = encode_cond(self.encoder, list(batch["caption"]))
        w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(b, generator=self.gen, device=dev)
        s, t = sample_times(b, cfg.steps, self.gen, dev, cfg.time_sampling)
        z_t = diffuse(x, t, torch.randn(x.shape, generator=self.gen, device=dev))
        return z_t, cond, w, s, t

    def _student(self, net: Denoiser, z, t, cond: TextCond, w) -> torch.Tensor:
        self.evals["forward"] += z.shape[0]
        with self.autocast():
            return net(z, t.float(), cond.states, cond.mask, w).float()

    def _teacher(self, z, s, cond: TextCond, w) -> torch.Tensor:
        self.evals["forward"] += 2 * z.shape[0]
        with torch.no_grad(), self.autocast():
            return guided(self.teacher, z, s.float(), cond, w).float()

    def _student_direction(self, direction: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, dict[str, Any]]:
        """w(s) d for the surrogate, and the per-s-bin signal of this update (see the module docstring)."""
        cfg = self.cfg
        d = weighted_direction(direction, cfg.weighting, s, cfg.snr_cap, self.normaliser)
        gap_sum, count = per_bin(direction.detach().flatten(1).pow(2).mean(1), s, cfg.s_bins)
        energy, _ = per_bin(d.flatten(1).pow(2).sum(1), s, cfg.s_bins)
        total = sum(energy) or 1.0
        signal = {
            "sbin_gap": [g / c if c else float("nan") for g, c in zip(gap_sum, count, strict=True)],
            "sbin_energy": [e / total for e in energy],
        }
        return d, signal

    def _step(self, loss: torch.Tensor, net: torch.nn.Module, opt: torch.optim.Optimizer, lr: float, n: int) -> float:
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        self.evals["backward"] += n
        norm = float(torch.nn.utils.clip_grad_norm_(net.parameters(), self.cfg.grad_clip))
        opt.step()
        return norm

    # -- one student update --
    def iteration(self, batches, step: int) -> dict[str, Any]:
        cfg = self.cfg
        lr = lr_schedule(step, cfg.iters, cfg)
        if step < cfg.warm_start:
            loss = self.warm_start_update(next(batches), lr)
            if step + 1 == cfg.warm_start:
                self._end_warm_start()
            elif self.ema is not None:
                ema_update(self.ema, self.student, cfg.ema_decay)
            return {"warm_loss": loss, "loss": loss, "lr": lr}
        row = self._mm_alt(batches, lr) if cfg.method == MM_ALT else self._mm_param(batches, lr)
        if self.ema is not None:
            ema_update(self.ema, self.student, cfg.ema_decay)
        return {**row, "loss": row["student_loss"], "lr": lr}

    @classmethod
    def images_for(cls, cfg: DistillConfig, iters: int) -> int:
        """Training images the first `iters` iterations draw: one batch a warm-start update; then
        mm-alt draws `aux_steps` + 1 batches an update, mm-param two (minibatches A and B)."""
        warm = min(iters, cfg.warm_start)
        per = cfg.aux_steps + 1 if cfg.method == MM_ALT else 2
        return cfg.batch_size * (warm + per * (iters - warm))

    def warm_start_update(self, batch: dict[str, Any], lr: float) -> float:
        """One guided warm-start update: regress the student's x prediction at (z_t, t, w) onto the
        guided teacher's at the same w, on noised training images (plain x-space MSE, like the
        auxiliary's default). The student starts as the unguided teacher (its w input is
        zero-initialised), so moment matching would otherwise spend its first updates learning what
        guidance does; this teaches it directly, at half the cost of an mm-alt update."""
        z_t, cond, w, _, t = self.draw(batch)
        target = self._teacher(z_t, t, cond, w)
        pred = self._student(self.student, z_t, t, cond, w)
        loss = (pred - target).pow(2).mean()
        self._step(loss, self.student, self.opt, lr, z_t.shape[0])
        return loss.item()

    def _end_warm_start(self) -> None:
        """The warm-started student becomes the auxiliary's and the EMA's starting point too, so
        moment matching begins from a student, auxiliary and EMA that all equal the guided fit."""
        state = self.student.state_dict()
        if self.aux is not None:
            self.aux.load_state_dict(state)
        if self.ema is not None:
            self.ema.load_state_dict(state)
        log.info("guided warm start done after %d updates: auxiliary and EMA copied", self.cfg.warm_start)

    def curve(self) -> tuple[str, str]:
        return "gap_rms", "RMS of fake - teacher at z_s"

    def networks(self) -> dict[str, tuple[Denoiser, torch.optim.Optimizer | None]]:
        nets: dict[str, tuple[Denoiser, torch.optim.Optimizer | None]] = {"student": (self.student, self.opt)}
        if self.aux is not None and self.opt_aux is not None:
            nets["aux"] = (self.aux, self.opt_aux)
        if self.ema is not None:
            nets["ema"] = (self.ema, None)
        return nets

    def state(self) -> dict[str, Any]:
        return {"sbin": self.normaliser.state()} if self.normaliser is not None else {}

    def set_state(self, state: dict[str, Any]) -> None:
        if self.normaliser is not None:
            self.normaliser.load_state(state["sbin"])

    def _mm_alt(self, batches, lr: float) -> dict[str, Any]:
        a_losses = [self.aux_update(next(batches), lr) for _ in range(self.cfg.aux_steps)]
        return {"aux_loss": float(np.mean(a_losses)), **self.student_update(next(batches), lr)}

    def aux_update(self, batch: dict[str, Any], lr: float) -> float:
        """One auxiliary step: fit the student's conditional mean E[x_tilde | z_s], teacher-anchored.
        Only the auxiliary's parameters change."""
        cfg, aux = self.cfg, self.aux
        assert aux is not None and self.opt_aux is not None
        z_t, cond, w, s, t = self.draw(batch)
        with torch.no_grad():
            x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))
        target = self._teacher(z_s, s, cond, w)
        pred = self._student(aux, z_s, s, cond, w)
        weight = {
            "none": None,
            "teacher": lambda: teacher_weight(s, cfg.teacher_weight_cap),
            "snr-cap": lambda: teacher_weight(s, cfg.snr_cap),
        }[cfg.aux_weighting]
        weight = weight() if weight is not None else None
        loss = aux_loss(pred, x_tilde, target, weight)
        self._step(loss, aux, self.opt_aux, (cfg.aux_lr or cfg.lr) * lr / cfg.lr, z_t.shape[0])
        return loss.item()

    def student_update(self, batch: dict[str, Any], lr: float) -> dict[str, Any]:
        """One student step: move E[x_tilde | z_s] toward the guided teacher. Only the student changes."""
        assert self.aux is not None
        z_t, cond, w, s, t = self.draw(batch)
        x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))
        target = self._teacher(z_s, s, cond, w)
        with torch.no_grad():
            fake = self._student(self.aux, z_s, s, cond, w)
        d, signal = self._student_direction(fake - target, s)
        loss = surrogate(x_tilde, d, "none")  # mm_alt_student_loss with the weighting applied above
        norm = self._step(loss, self.student, self.opt, lr, z_t.shape[0])
        gap = (fake - target).pow(2).mean().sqrt().item()
        return {"student_loss": loss.item(), "gap_rms": gap, "grad_norm": norm, **signal}

    def _mm_param(self, batches, lr: float) -> dict[str, Any]:
        cfg, teacher = self.cfg, self.teacher
        assert self.adam_v is not None
        params = {k: p.detach().requires_grad_(True) for k, p in teacher.named_parameters()}
        buffers = dict(teacher.named_buffers())
        # Minibatch A: the teacher's training gradient on student samples, preconditioned.
        z_t, cond, w, s, t = self.draw(next(batches))
        with torch.no_grad():
            x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))

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
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))
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
