"""What the two distillation baselines share (`pd`: distill.methods.progressive, `cd`:
distill.methods.consistency): networks, data, counters and the guided teacher; the loop, checkpoints, run
directory and packed student are `distill.methods.runloop`'s, as for moment matching.

Same conventions as the moment-matching runner (`distill.methods.moment_matching_run`), so the methods compare on
equal terms: the student is `distill.methods.student.make_student(teacher, seed)` (the teacher plus a
zero-initialised guidance-scale input), w is drawn per example from [guidance_min, guidance_max]
and the teacher target is classifier-free guided at that w (`distill.methods.student.guided`), data come
from `distill.kit.data.build_dataset` at the teacher's resolution, and the run directory holds
config.json, metrics.jsonl (`step`, `loss` per row), samples/, an atomic checkpoint/ that resumes
exactly (student, optimiser, EMA and the method's extra networks, RNG, data position),
summary.json and the packed student (`student/`).

Both baselines' students are deterministic samplers: DDIM through the student's x-prediction on
the K-step grid (`fewstep.sampler.ddim_sample`); the packed config's `student.sampler` says so.

A method subclasses `BaselineRun`, implements `iteration(batches, step) -> {"loss": ..., ...}`
and is listed in `distill.methods.registry`. Network evaluations are counted in images per pass, by role
(`evals`): the teacher's guided passes count twice (conditional and null halves of one doubled
batch).
"""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.kit.guidance import TextCond, encode_cond
from distill.methods.config import DistillConfig
from distill.methods.runloop import RunBase, ema_update, lr_schedule
from fewstep.networks import Denoiser

log = logging.getLogger(__name__)
FORMAT = "fewstep-distill-baseline-1"
SAMPLER = "ddim"  # how pd and cd students are sampled (the packed config's `student.sampler`)


class BaselineRun(RunBase):
    """Networks, optimiser, RNG and counters of one baseline run; subclasses add the method."""

    format = FORMAT
    sampler = SAMPLER

    eval_keys: tuple[str, ...] = ("teacher_forward", "student_forward", "backward")

    def __init__(self, cfg: DistillConfig, teacher_path: str | Path, device: torch.device) -> None:
        self._start_from_teacher(cfg, teacher_path, device)
        self.opt = self.new_optimizer()
        self.ema = self._frozen_copy(self.student) if cfg.ema_decay > 0 else None
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(int(np.random.SeedSequence([cfg.seed, 13]).generate_state(1)[0]))
        self.evals: dict[str, int] = dict.fromkeys(self.eval_keys, 0)

    # -- pieces subclasses use --
    def new_optimizer(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.student.parameters(), lr=self.cfg.lr, betas=self.cfg.betas)

    @staticmethod
    def _frozen_copy(net: Denoiser) -> Denoiser:
        return copy.deepcopy(net).eval().requires_grad_(False)

    def data(self, batch: dict[str, Any]) -> tuple[torch.Tensor, TextCond, torch.Tensor]:
        """x, text conditioning (with the null text for guidance) and w ~ U[guidance_min, guidance_max]."""
        cfg, dev = self.cfg, self.device
        x = batch["image"].to(dev)
        cond = encode_cond(self.encoder, list(batch["caption"]))
        u = torch.rand(x.shape[0], generator=self.gen, device=dev)
        return x, cond, cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * u

    def randn(self, like: torch.Tensor) -> torch.Tensor:
        return torch.randn(like.shape, generator=self.gen, device=self.device)

    def randint(self, high: int, batch: int) -> np.ndarray:
        return torch.randint(high, (batch,), generator=self.gen, device=self.device).cpu().numpy()

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then cosine decay over the run (`distill.methods.runloop.lr_schedule`, as every method)."""
        return lr_schedule(step, self.cfg.iters, self.cfg)

    def update(self, loss: torch.Tensor, lr: float, images: int) -> float:
        """One Adam step of the student (gradient clipped), then the EMA; returns the gradient norm."""
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.count("backward", images)
        norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.grad_clip))
        self.opt.step()
        if self.ema is not None:
            ema_update(self.ema, self.student, self.cfg.ema_decay)
        return norm

    # -- hooks --
    def extra_networks(self) -> dict[str, Denoiser]:
        """Further networks a checkpoint must hold (the EMA, a target or stage teacher)."""
        return {"ema": self.ema} if self.ema is not None else {}

    def networks(self) -> dict[str, tuple[Denoiser, torch.optim.Optimizer | None]]:
        nets: dict[str, tuple[Denoiser, torch.optim.Optimizer | None]] = {"student": (self.student, self.opt)}
        return nets | {name: (net, None) for name, net in self.extra_networks().items()}
