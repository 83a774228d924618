"""What mm-alt and mm-param share (`distill.methods.mm_alt`, `distill.methods.mm_param`): few-step
students from the frozen teacher by moment matching (Salimans et al. 2024; the maths in
`distill.methods.moment_matching`, the forward process and posterior draw in `distill.kit.diffusion`).

Students (and the mm-alt auxiliary) start as copies of the teacher with a zero-initialised
guidance-scale input (`UNetConfig.guidance_input`), so step 0 reproduces the teacher's conditional
prediction; w is drawn per example from [guidance_min, guidance_max] and the teacher target uses
classifier-free guidance at that w (Meng et al. 2023): one student then serves any w in the range
at one network evaluation per step. An optional guided warm start (`warm_start` updates) first
regresses the student onto the guided teacher, then seeds the auxiliary and the EMA with it.

The loop, the run directory (config.json, metrics.jsonl, samples/, an atomic checkpoint/ that
resumes exactly: student, auxiliary, EMA, optimisers, the s-bin normaliser, RNG, data position) and
the packed student are `distill.methods.runloop`'s, shared with the pd and cd baselines.

Each logged row of metrics.jsonl holds the per-s-bin signal (`s_bins` equal bins of s in [0, 1]):
`sbin_gap`, the mean squared gap of the update's direction per bin (mm-alt: |x_hat_phi -
x_hat_theta|^2; mm-param: |J nu|^2), and `sbin_energy`, each bin's share of the student's gradient
energy sum |w(s) d|^2 (null: no example).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.kit.diffusion import diffuse
from distill.kit.guidance import TextCond, encode_cond
from distill.methods.config import MomentMatchingConfig
from distill.methods.moment_matching import SBinNormaliser, per_bin, sample_times, weighted_direction
from distill.methods.runloop import RunBase, ema_update, lr_schedule
from fewstep.networks import Denoiser

log = logging.getLogger(__name__)
FORMAT = "fewstep-distill-1"


class MomentMatchingRun(RunBase):
    """The moment-matching run's student, EMA, optimiser, RNG and counters, and one iteration: a
    guided warm-start update for the first `warm_start` iterations, then the method's
    `mm_update`. Subclasses add their networks in `_init_method` and say how many training
    batches an update draws (`batches_per_update`)."""

    format = FORMAT
    cfg: MomentMatchingConfig

    def __init__(self, cfg: MomentMatchingConfig, teacher_path: str | Path, device: torch.device) -> None:
        self._start_from_teacher(cfg, teacher_path, device)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr, betas=cfg.betas)
        self._init_method(teacher_path)
        self.ema = copy.deepcopy(self.student).eval().requires_grad_(False) if cfg.ema_decay > 0 else None
        self.normaliser = SBinNormaliser(cfg.s_bins, cfg.sbin_decay) if cfg.weighting == "sbin" else None
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(int(np.random.SeedSequence([cfg.seed, 11]).generate_state(1)[0]))
        self.evals: dict[str, int] = {"forward": 0, "backward": 0}  # image-network passes

    # -- what a method adds --
    def _init_method(self, teacher_path: str | Path) -> None:
        """Create the method's own networks (after the student, before the EMA)."""

    @classmethod
    def batches_per_update(cls, cfg: MomentMatchingConfig) -> int:
        raise NotImplementedError

    def mm_update(self, batches, lr: float) -> dict[str, Any]:
        """One moment-matching update of the student; the row holds "student_loss"."""
        raise NotImplementedError

    # -- data and passes --
    def draw(self, batch: dict[str, Any]) -> tuple[torch.Tensor, TextCond, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, dev = self.cfg, self.device
        x = batch["image"].to(dev)
        b = x.shape[0]
        cond = encode_cond(self.encoder, list(batch["caption"]))
        w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(b, generator=self.gen, device=dev)
        s, t = sample_times(b, cfg.steps, self.gen, dev, cfg.time_sampling)
        z_t = diffuse(x, t, torch.randn(x.shape, generator=self.gen, device=dev))
        return z_t, cond, w, s, t

    def noise(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.gen, device=self.device)

    def _student(self, net: Denoiser, z, t, cond: TextCond, w) -> torch.Tensor:
        return self.net_x(net, z, t.float(), cond, w, key="forward")

    def _teacher(self, z, s, cond: TextCond, w) -> torch.Tensor:
        return self.teacher_x(z, s.float(), cond, w, key="forward")

    def _student_direction(
        self, direction: torch.Tensor, s: torch.Tensor, weighted: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        """w(s) d for the surrogate, and the per-s-bin signal of this update (see the module docstring).
        `weighted`: w(s) d when the method weighs the direction itself (emd's DMD normaliser)."""
        cfg = self.cfg
        d = weighted if weighted is not None else weighted_direction(direction, cfg.weighting, s, cfg.snr_cap,
                                                                         self.normaliser)  # fmt: skip
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
        row = self.mm_update(batches, lr)
        if self.ema is not None:
            ema_update(self.ema, self.student, cfg.ema_decay)
        return {**row, "loss": row["student_loss"], "lr": lr}

    @classmethod
    def images_for(cls, cfg: MomentMatchingConfig, iters: int) -> int:
        """Training images the first `iters` iterations draw: one batch a warm-start update, then
        `batches_per_update` a moment-matching update."""
        warm = min(iters, cfg.warm_start)
        return cfg.batch_size * (warm + cls.batches_per_update(cfg) * (iters - warm))

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
        for net, _ in self.method_networks().values():
            net.load_state_dict(state)
        if self.ema is not None:
            self.ema.load_state_dict(state)
        log.info("guided warm start done after %d updates: auxiliary and EMA copied", self.cfg.warm_start)

    def curve(self) -> tuple[str, str]:
        return "gap_rms", "RMS of fake - teacher at z_s"

    def networks(self) -> dict[str, tuple[Denoiser, torch.optim.Optimizer | None]]:
        nets: dict[str, tuple[Denoiser, torch.optim.Optimizer | None]] = {"student": (self.student, self.opt)}
        nets.update(self.method_networks())
        if self.ema is not None:
            nets["ema"] = (self.ema, None)
        return nets

    def method_networks(self) -> dict[str, tuple[Denoiser, torch.optim.Optimizer | None]]:
        """The method's own trained networks, checkpointed after the student (mm-alt: the auxiliary)."""
        return {}

    def state(self) -> dict[str, Any]:
        return {"sbin": self.normaliser.state()} if self.normaliser is not None else {}

    def set_state(self, state: dict[str, Any]) -> None:
        if self.normaliser is not None:
            self.normaliser.load_state(state["sbin"])
