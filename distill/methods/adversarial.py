"""Adversarial diffusion distillation (`--method add`): A. Sauer, D. Lorenz, A. Blattmann, R. Rombach,
"Adversarial Diffusion Distillation", 2023 (arXiv 2311.17042), at K = 1 to 4 steps.

The student is a copy of the teacher with a zero-initialised w input (`distill.methods.student`),
sampled with the shared ancestral sampler (`fewstep.sampler`): each step's x_hat is meant to be a
sample of the data given z_t, so the next z is drawn from q(z_s | z_t, x_hat), the posterior of
the forward process, which is the right draw for a sample rather than a mean.

One update (batch B):

    x, c ~ data; w ~ U[guidance_min, guidance_max]; i ~ U{0..K-1}, t = 1 - i/K (the student's grid)
    z_t = alpha_t x + sigma_t eps;  x_hat = G(z_t, t, c, w)
    distillation: s ~ U(0.02, 0.98); z_s = alpha_s sg(x_hat) + sigma_s eps'
                  L_distill = mean_b alpha_s |x_hat - sg x_hat_teacher^w(z_s, s, c)|^2
    adversarial:  t_d ~ U[disc_t_min, disc_t_max], eps_d shared by the pair
                  f_fake = F(alpha x_hat + sigma eps_d, t_d, c), f_real = F(alpha x + sigma eps_d, t_d, c)
                  (F: the frozen teacher's features, `distill.methods.discriminator`)
    discriminator step: L_D = hinge(D(f_real), D(sg f_fake)) + r1_weight |grad_f D(f_real)|^2
    student step:       L = distill_weight L_distill + lambda(step) (-mean D(f_fake))

The distillation term is the paper's score-distillation loss: the gradient of the squared distance
to the teacher's prediction on the re-noised student sample, with the teacher held fixed, is
proportional to the teacher's score-distillation direction; the weight c(s) = alpha_s is the
paper's "exponential" weighting (less weight where the re-noised sample is mostly noise).

Stabilisation (`docs/design/shortcut-add.md`): the student starts as the teacher (regression alone
first: lambda ramps linearly from 0 to adv_weight over `adv_warmup` updates, while the
discriminator already trains from update 0); hinge loss; spectrally normalised heads on frozen
features; R1 on the real features; a separate discriminator learning rate (`disc_lr`, Adam with
betas (0, 0.99), constant); both real and fake are noised to t_d before the features, so the two
distributions overlap. The discriminator's weights and optimiser are in every checkpoint.

Cost per update: one guided teacher pass (2B images), two teacher feature passes (real and fake,
2B) and, once lambda > 0, a backward through the feature pass of the fake (B, `feature_backward`),
one student pass (B) and its backward (B); the heads are negligible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill.kit.diffusion import diffuse, forward_process, per_example, times
from distill.kit.guidance import TextCond
from distill.methods.baseline import BaselineRun
from distill.methods.config import AddConfig
from distill.methods.discriminator import (
    FeatureDiscriminator,
    hinge_d_loss,
    hinge_g_loss,
    pooled_text,
    r1_penalty,
    teacher_features,
)
from fewstep.networks import alpha_sigma_torch
from fewstep.schedule import step_plan

RENOISE = (0.02, 0.98)  # the range of s of the distillation loss's re-noising


def adversarial_weight(step: int, cfg: AddConfig) -> float:
    """lambda(step): 0 at update 0, rising linearly to `adv_weight` at update `adv_warmup`."""
    if cfg.adv_warmup == 0:
        return cfg.adv_weight
    return cfg.adv_weight * min(1.0, step / cfg.adv_warmup)


def distillation_loss(x_hat: torch.Tensor, x_teacher: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """mean_b alpha_s |x_hat - sg x_teacher|^2 (the exponential weighting c(s) = alpha_s)."""
    alpha, _ = alpha_sigma_torch(s.float())
    err = (x_hat - x_teacher.detach()).pow(2).flatten(1).mean(1)
    return (alpha.to(err.dtype) * err).mean()


class AddRun(BaselineRun):
    sampler = "ancestral"
    eval_keys = ("teacher_forward", "feature_forward", "student_forward", "backward", "feature_backward")

    def __init__(self, cfg: AddConfig, teacher_path: str | Path, device: torch.device) -> None:
        super().__init__(cfg, teacher_path, device)
        self.disc = FeatureDiscriminator.for_teacher(self.teacher, cfg.disc_channels, cfg.seed + 1)
        self.disc_opt = torch.optim.Adam(self.disc.parameters(), lr=cfg.disc_lr, betas=(0.0, 0.99))

    def features(self, z, t, cond: TextCond) -> list[torch.Tensor]:
        """The frozen teacher's conditional features (one image a pass; gradients to z if enabled)."""
        self.count("feature_forward", z.shape[0])
        with self.autocast():
            return teacher_features(self.teacher, z, t, cond.states, cond.mask)

    def uniform(self, lo: float, hi: float, n: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=self.gen, device=self.device)

    def iteration(self, batches, step: int) -> dict[str, float]:
        cfg = self.cfg
        x, cond, w = self.data(next(batches))
        b = x.shape[0]
        plan = step_plan(cfg.steps)
        i = self.randint(cfg.steps, b)
        z_t = forward_process(x, per_example(plan.alpha_t[i], x), per_example(plan.sigma_t[i], x), self.randn(x))
        x_hat = self.net_x(self.student, z_t, times(plan.t[i], x), cond, w)

        s = self.uniform(*RENOISE, b)
        x_teacher = self.teacher_x(diffuse(x_hat.detach(), s, self.randn(x)), s, cond, w)
        l_distill = distillation_loss(x_hat, x_teacher, s)

        t_d = self.uniform(cfg.disc_t_min, cfg.disc_t_max, b)
        eps_d = self.randn(x)
        text = pooled_text(cond.states, cond.mask).float()
        lam = adversarial_weight(step, cfg)
        with torch.set_grad_enabled(lam > 0):
            f_fake = self.features(diffuse(x_hat, t_d, eps_d), t_d, cond)
        with torch.no_grad():
            f_real = self.features(diffuse(x, t_d, eps_d), t_d, cond)
        d_row = self.discriminator_step([f.float().requires_grad_(True) for f in f_real], f_fake, text)

        loss = cfg.distill_weight * l_distill
        row = {"distill_loss": l_distill.item()}
        if lam > 0:
            adv = hinge_g_loss(self.disc(f_fake, text))
            loss = loss + lam * adv
            self.count("feature_backward", b)
            row["g_adv_loss"] = adv.item()
        norm = self.update(loss, self.lr_at(step), b)
        return {"loss": loss.item(), **row, **d_row, "adv_weight": lam, "grad_norm": norm}

    def discriminator_step(self, f_real: list[torch.Tensor], f_fake: list[torch.Tensor], text) -> dict[str, float]:
        """One Adam step of the heads: hinge loss on real and (detached) fake features, plus R1 on the real."""
        self.disc_opt.zero_grad(set_to_none=True)  # also drops what the last student loss left on the heads
        d_real = self.disc(f_real, text)
        d_fake = self.disc([f.detach() for f in f_fake], text)
        l_d = hinge_d_loss(d_real, d_fake)
        r1 = r1_penalty(d_real, f_real) if self.cfg.r1_weight > 0 else d_real.new_zeros(())
        (l_d + self.cfg.r1_weight * r1).backward()
        torch.nn.utils.clip_grad_norm_(self.disc.parameters(), self.cfg.grad_clip)
        self.disc_opt.step()
        real_acc = float((d_real.detach() > 0).float().mean())
        fake_acc = float((d_fake.detach() < 0).float().mean())
        return {"d_loss": l_d.item(), "r1": r1.item(), "d_real_acc": real_acc, "d_fake_acc": fake_acc,
                "d_real": float(d_real.detach().mean()), "d_fake": float(d_fake.detach().mean())}  # fmt: skip

    def networks(self) -> dict[str, tuple[Any, torch.optim.Optimizer | None]]:
        return super().networks() | {"discriminator": (self.disc, self.disc_opt)}

    def summary_extra(self) -> dict[str, Any]:
        return {"discriminator_params": sum(p.numel() for p in self.disc.parameters()),
                "adv_weight": self.cfg.adv_weight, "adv_warmup": self.cfg.adv_warmup}  # fmt: skip
