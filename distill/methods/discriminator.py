"""The discriminator of adversarial distillation (`distill.methods.adversarial`): small trainable heads
on the frozen teacher's own features.

Sauer et al. (2023) put trainable heads on a frozen pretrained feature network (DINOv2) because a
discriminator trained from pixels on a few thousand images overfits and gives the generator weak,
noisy gradients. The nearest strong features here are the teacher's: it was trained on exactly
this world, it reads the caption, and it sees images at any noise level (as in Sauer et al.'s later
latent adversarial distillation, which noises both real and fake inputs before the teacher's
features; noising also keeps the real and fake distributions overlapping early on). A forward hook
collects the output of the last ResBlock of every down level and of the middle level; one head per
feature map gives a per-location logit plus a projection term against the pooled caption (the
projection discriminator of Miyato and Koyama 2018), averaged over locations and summed over heads.

The heads' layers are spectrally normalised (Miyato et al. 2018), which bounds their Lipschitz
constant and, with the hinge loss and the R1 penalty on the heads' inputs, keeps the
discriminator from winning outright on a tiny data set. Spectral normalisation's power-iteration
vectors are buffers, so they are checkpointed with the weights and a run resumes exactly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from fewstep.networks import Denoiser


def feature_blocks(teacher: Denoiser) -> list[nn.Module]:
    """The teacher's ResBlocks whose outputs are the discriminator's features (coarse to fine last)."""
    net = teacher.net
    return [level.blocks[-1] for level in net.down] + [net.mid.blocks[-1]]


def feature_channels(teacher: Denoiser) -> list[int]:
    cfg = teacher.cfg
    return [cfg.base_channels * m for m in cfg.channel_mults] + [cfg.base_channels * cfg.channel_mults[-1]]


def teacher_features(
    teacher: Denoiser, z: torch.Tensor, t: torch.Tensor, states: torch.Tensor, mask: torch.Tensor
) -> list[torch.Tensor]:
    """The feature maps of `feature_blocks` for one conditional teacher pass at (z, t, caption).

    Gradients flow to z when the caller has them on (the generator's adversarial loss); the
    teacher's own weights stay frozen. The hooks live only for this call."""
    found: list[torch.Tensor] = []
    handles = [b.register_forward_hook(lambda _m, _i, out: found.append(out)) for b in feature_blocks(teacher)]
    try:
        teacher(z, t, states, mask)
    finally:
        for h in handles:
            h.remove()
    return found


def pooled_text(states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The masked mean of the caption's token states (what the UNet's global text MLP reads too)."""
    m = mask.to(states.dtype)[..., None]
    return (states * m).sum(1) / m.sum(1).clamp(min=1.0)


class Head(nn.Module):
    """One feature map to a logit per example: a 3x3 conv, a per-location logit and a caption projection."""

    def __init__(self, channels: int, hidden: int, text_dim: int) -> None:
        super().__init__()
        self.conv = spectral_norm(nn.Conv2d(channels, hidden, 3, padding=1))
        self.out = spectral_norm(nn.Conv2d(hidden, 1, 1))
        self.text = spectral_norm(nn.Linear(text_dim, hidden))
        self.scale = 1.0 / math.sqrt(hidden)

    def forward(self, f: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = F.leaky_relu(self.conv(f.float()), 0.2)
        return self.out(h).mean((1, 2, 3)) + self.scale * (h.mean((2, 3)) * self.text(text)).sum(1)


class FeatureDiscriminator(nn.Module):
    """D(features, caption) = the sum of one head's logit per feature map, (B,)."""

    def __init__(self, channels: list[int], hidden: int, text_dim: int) -> None:
        super().__init__()
        self.heads = nn.ModuleList(Head(c, hidden, text_dim) for c in channels)

    @staticmethod
    def for_teacher(teacher: Denoiser, hidden: int, seed: int) -> FeatureDiscriminator:
        """Heads sized for `teacher`'s feature maps, initialised from `seed` (runs are reproducible)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            disc = FeatureDiscriminator(feature_channels(teacher), hidden, teacher.cfg.text_dim)
        return disc.to(next(teacher.parameters()).device).train()

    def forward(self, features: list[torch.Tensor], text: torch.Tensor) -> torch.Tensor:
        if len(features) != len(self.heads):
            raise ValueError(f"{len(self.heads)} heads, {len(features)} feature maps")
        return sum(head(f, text) for head, f in zip(self.heads, features, strict=True))


def hinge_d_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's hinge loss: mean relu(1 - D(real)) + mean relu(1 + D(fake))."""
    return F.relu(1.0 - real).mean() + F.relu(1.0 + fake).mean()


def hinge_g_loss(fake: torch.Tensor) -> torch.Tensor:
    """The generator's hinge loss: -mean D(fake)."""
    return -fake.mean()


def r1_penalty(real_logits: torch.Tensor, inputs: list[torch.Tensor]) -> torch.Tensor:
    """mean_b sum |d D(f_real) / d f_real|^2 over the heads' inputs (Mescheder et al. 2018's R1, on
    the features rather than pixels: the feature network is frozen, the heads are what is trained)."""
    grads = torch.autograd.grad(real_logits.sum(), inputs, create_graph=True)
    return sum(g.pow(2).flatten(1).sum(1) for g in grads).mean()
