"""emd (`fewstep distill --method emd`): a one-step generator by distribution matching.

Why not EM distillation itself (Xie et al. 2024). EMD trains the one-step generator by maximum
likelihood through an expectation-maximisation view: each update first refines the generator's
(noise, image) pairs by several MCMC (Langevin) steps on their joint, every step one guided
teacher pass (two network evaluations) plus the generator's, and then fits the generator to the
refined pairs, with a noise-cancellation trick for the gradient's variance. With no MCMC step the
EM update is the distribution-matching (Diff-Instruct / DMD) update; the MCMC refinement is what
EMD adds on top, at several times the teacher passes per update. On this machine's 2 CPU cores an
mm-alt update already costs about 2 s, so an update that adds 4 to 16 guided teacher passes would
leave a few hundred updates in the budgets every method gets (`--budget-images`), too few for the
sampler to pay for itself. So this module builds the closest practical relative the design note
names: DMD/DMD2 (Yin et al. 2024 a, b), K = 1.

The algorithm. The generator g_eta maps pure noise z_1 ~ N(0, I) (t = 1, with the caption and w)
to x_tilde. A "fake score" network x_hat_phi, started from the teacher, is trained by denoising
the generator's re-noised samples (`aux_steps` updates per generator update: DMD2's two
time-scale rule); it tracks E[x_tilde | z_s] for z_s ~ q(z_s | z_1, x_tilde), which at t = 1 is the
forward process q(z_s | x_tilde) (alpha_1 = 5.5e-4). The generator then moves along
x_hat_phi(z_s) - x_hat_theta^w(z_s), the guided teacher's prediction as the "real score":
the gradient of the reverse KL between the generator's and the teacher's noised marginals,
averaged over s. DMD weighs it per example by 1 / mean |x_hat_theta^w(z_s) - x_tilde| (`dmd_direction`).

That is mm-alt's auxiliary-denoiser machinery at K = 1 with t = 1, so the run subclasses `MmAltRun`
and the maths stays where it is: the fake score's loss is `moment_matching.aux_loss` with the
teacher anchor weighted by `fake_anchor` (0: DMD's plain denoising loss), z_s is
`kit.diffusion.posterior_draw`, the generator's loss is the same linear surrogate
(`moment_matching.surrogate`). What emd changes is the input (pure noise, not noised data: the
generator never sees a training image, only its caption), the fake score's anchor, the
per-example DMD weight and the update ratio. Left out: DMD's regression loss on precomputed
teacher ODE pairs (DMD2 drops it) and DMD2's GAN head (the `add` method is the adversarial one).
"""

from __future__ import annotations

from typing import Any

import torch

from distill.kit.guidance import TextCond, encode_cond
from distill.methods.config import EmdConfig
from distill.methods.mm_alt import MmAltRun
from distill.methods.moment_matching import MIN_GAP, surrogate


def dmd_direction(x_tilde: torch.Tensor, fake: torch.Tensor, real: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """DMD's generator direction (Yin et al. 2024, eq. 8): (fake - real) / mean |real - x_tilde| per
    example, detached. The normaliser makes the step size the same whatever the noise level and
    however far the generator still is from the teacher."""
    scale = (real - x_tilde).detach().abs().flatten(1).mean(1).view(-1, *([1] * (x_tilde.ndim - 1)))
    return ((fake - real) / (scale + eps)).detach()


def generator_loss(x_tilde: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """The generator's surrogate: mean x_tilde . sg(dmd_direction): its gradient in x_tilde is the DMD
    direction (divided by the number of elements, as every moment-matching surrogate)."""
    return surrogate(x_tilde, dmd_direction(x_tilde, fake, real), "none")


def draw_renoise_times(
    batch: int, gen: torch.Generator, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) for a one-step generator: t = 1 (where the sampler starts), s ~ U(0, 1 - MIN_GAP)
    (float64): the noise levels the fake and real scores compare the generator's samples at."""
    s = torch.rand(batch, generator=gen, device=device, dtype=torch.float64) * (1.0 - MIN_GAP)
    return s, torch.ones(batch, device=device, dtype=torch.float64)


class EmdRun(MmAltRun):
    """emd: the generator (the student at K = 1), its fake score (mm-alt's auxiliary) and their
    optimisers; `mm_update` is `aux_steps` fake-score updates and one generator update, both
    mm-alt's own (`MmAltRun.aux_update`, `student_update`: only the network each is for changes)
    with emd's input (`draw`), fake-score anchor (`aux_anchor`) and DMD weight (`weigh_direction`)."""

    cfg: EmdConfig

    def draw(self, batch: dict[str, Any]) -> tuple[torch.Tensor, TextCond, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Pure noise at t = 1 with the batch's captions (the images are not used: distribution
        matching needs no data), w drawn per example, and the re-noising level s."""
        cfg, dev = self.cfg, self.device
        captions = list(batch["caption"])
        b = len(captions)
        res = self.tcfg.model.resolution
        cond = encode_cond(self.encoder, captions)
        w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(b, generator=self.gen, device=dev)
        s, t = draw_renoise_times(b, self.gen, dev)
        z_1 = torch.randn((b, self.tcfg.model.in_channels, res, res), generator=self.gen, device=dev)
        return z_1, cond, w, s, t

    def aux_anchor(self) -> float:
        """The fake score's teacher-anchor weight, `fake_anchor` (0, the default: DMD's plain denoising
        of the generator's re-noised samples, and no teacher pass in its update)."""
        return self.cfg.fake_anchor

    def weigh_direction(self, x_tilde: torch.Tensor, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor | None:
        """The generator moves along fake - real weighed by DMD's per-example normaliser
        (`dmd_direction`, Yin et al. 2024, eq. 8) with weighting=dmd; else as mm-alt weighs it."""
        return dmd_direction(x_tilde, fake, real) if self.cfg.weighting == "dmd" else None
