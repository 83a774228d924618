"""The pixel-space text-conditioned UNet (torch; imported only by distill and the torch backend).

Text conditioning is both global and local, because a weakly conditioned small UNet learns
backgrounds and positions but not colours or shapes (measured here, see the developers' guide):
- global: the masked mean of the token states, through an MLP, is added to the timestep
  embedding, so every ResBlock's FiLM sees the caption;
- local: cross-attention to the token states at the lower resolutions.
An optional guidance-scale input (students, Meng et al. 2023) adds an embedding of w to the same
vector; its last layer is zero-initialised so a student starts exactly equal to its teacher. A
shortcut student (Frans et al. 2024) also takes the step size d of the sampler it runs in (d = 1/K
on the uniform K-step grid), embedded as log2(1/d) the same way and also zero-initialised, so one
network serves every power-of-two K and still starts as its teacher.

`Denoiser.predict_x` exposes x-prediction whatever the training parameterisation; the VP
coefficients come from the same truncated cosine as `fewstep.schedule` (parity tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from fewstep.config import UNetConfig
from fewstep.schedule import COSINE_A, COSINE_B


def alpha_sigma_torch(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha_t, sigma_t of `fewstep.schedule.alpha_sigma` on tensors: cos / sin of (A t + B).

    The truncated-cosine log-SNR -2 log tan(A t + B) gives alpha^2 = sigmoid(lambda) = cos^2.
    """
    angle = COSINE_A * t + COSINE_B
    return torch.cos(angle), torch.sin(angle)


def sinusoidal(x: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of a (B,) tensor."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=x.device, dtype=torch.float32) / half)
    args = x.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(groups, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class Attention(nn.Module):
    """Multi-head attention from image positions to a context (itself, or the text tokens)."""

    def __init__(self, channels: int, context_dim: int | None, heads: int, groups: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(context_dim or channels, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # (B, HW, C)
        ctx = h if context is None else context
        q = self.q(h)
        k, v = self.kv(ctx).chunk(2, dim=-1)

        def split(a: torch.Tensor) -> torch.Tensor:
            return a.reshape(b, a.shape[1], self.heads, c // self.heads).transpose(1, 2)

        attn_mask = None if mask is None else mask[:, None, None, :].bool()
        o = F.scaled_dot_product_attention(split(q), split(k), split(v), attn_mask=attn_mask)
        o = o.transpose(1, 2).reshape(b, hgt * wid, c)
        return x + self.out(o).transpose(1, 2).reshape(b, c, hgt, wid)


class Level(nn.Module):
    """ResBlocks at one resolution, each optionally followed by self- and cross-attention."""

    def __init__(self, chans: list[tuple[int, int]], emb: int, cfg: UNetConfig, res: int) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(ResBlock(ci, co, emb, cfg.groups) for ci, co in chans)
        sa = res in cfg.self_attn_resolutions
        ca = res in cfg.cross_attn_resolutions
        self.self_attn = nn.ModuleList(
            Attention(co, None, cfg.heads, cfg.groups) if sa else nn.Identity() for _, co in chans
        )
        self.cross_attn = nn.ModuleList(
            Attention(co, cfg.text_dim, cfg.heads, cfg.groups) if ca else nn.Identity() for _, co in chans
        )


class UNet(nn.Module):
    """Predicts the configured target (v, x or eps) from (z_t, t, text states, text mask[, w])."""

    def __init__(self, cfg: UNetConfig) -> None:
        super().__init__()
        self.cfg = cfg
        c0 = cfg.base_channels
        emb = 4 * c0
        self.t_mlp = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.text_mlp = nn.Sequential(nn.Linear(cfg.text_dim, emb), nn.SiLU(), nn.Linear(emb, emb))
        if cfg.guidance_input:
            self.w_mlp = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
            nn.init.zeros_(self.w_mlp[-1].weight)
            nn.init.zeros_(self.w_mlp[-1].bias)
        if cfg.step_size_input:
            self.d_mlp = nn.Sequential(nn.Linear(c0, emb), nn.SiLU(), nn.Linear(emb, emb))
            nn.init.zeros_(self.d_mlp[-1].weight)
            nn.init.zeros_(self.d_mlp[-1].bias)
        self.conv_in = nn.Conv2d(cfg.in_channels, c0, 3, padding=1)

        widths = [c0 * m for m in cfg.channel_mults]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        skips = [c0]
        ch, res = c0, cfg.resolution
        for i, wd in enumerate(widths):
            chans = []
            for _ in range(cfg.num_res_blocks):
                chans.append((ch, wd))
                ch = wd
                skips.append(ch)
            self.down.append(Level(chans, emb, cfg, res))
            if i < len(widths) - 1:
                self.downsample.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
                skips.append(ch)
                res //= 2
        self.mid = Level([(ch, ch), (ch, ch)], emb, cfg, res)
        self.mid.self_attn[1] = nn.Identity()
        self.mid.cross_attn[1] = nn.Identity()
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, wd in reversed(list(enumerate(widths))):
            chans = []
            for _ in range(cfg.num_res_blocks + 1):
                chans.append((ch + skips.pop(), wd))
                ch = wd
            self.up.append(Level(chans, emb, cfg, res))
            if i > 0:
                self.upsample.append(nn.Conv2d(ch, ch, 3, padding=1))
                res *= 2
        self.norm_out = nn.GroupNorm(cfg.groups, ch)
        self.conv_out = nn.Conv2d(ch, cfg.in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def embed(
        self,
        t: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor,
        w: torch.Tensor | None,
        d: torch.Tensor | None = None,
    ) -> torch.Tensor:
        e = self.t_mlp(sinusoidal(t * 1000.0, self.cfg.base_channels))
        m = mask.to(states.dtype)[..., None]
        pooled = (states * m).sum(1) / m.sum(1).clamp(min=1.0)
        e = e + self.text_mlp(pooled)
        if self.cfg.guidance_input:
            if w is None:
                raise ValueError("this network takes the guidance scale w as an input")
            e = e + self.w_mlp(sinusoidal(w * 100.0, self.cfg.base_channels))
        if self.cfg.step_size_input:
            if d is None:
                raise ValueError("this network takes the sampler's step size d (1/K) as an input")
            # log2(1/d) = log2 K: 0, 1, 2, ... for K = 1, 2, 4, ...; scaled like w so that
            # neighbouring step counts are far apart in the sinusoidal features.
            e = e + self.d_mlp(sinusoidal(-torch.log2(d.float()) * 100.0, self.cfg.base_channels))
        return e

    @staticmethod
    def _run(
        level: Level,
        h: torch.Tensor,
        e: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor,
        skips: list[torch.Tensor],
        mode: str,
    ) -> torch.Tensor:
        """Run one level; mode 'down' pushes each output to `skips`, 'up' pops one per block."""
        for block, sa, ca in zip(level.blocks, level.self_attn, level.cross_attn, strict=True):
            if mode == "up":
                h = torch.cat([h, skips.pop()], dim=1)
            h = block(h, e)
            if not isinstance(sa, nn.Identity):
                h = sa(h)
            if not isinstance(ca, nn.Identity):
                h = ca(h, states, mask)
            if mode == "down":
                skips.append(h)
        return h

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor,
        w: torch.Tensor | None = None,
        d: torch.Tensor | None = None,
    ) -> torch.Tensor:
        e = self.embed(t, states, mask, w, d)
        h = self.conv_in(z)
        skips = [h]
        for i, level in enumerate(self.down):
            h = self._run(level, h, e, states, mask, skips, "down")
            if i < len(self.downsample):
                h = self.downsample[i](h)
                skips.append(h)
        h = self._run(self.mid, h, e, states, mask, skips, "mid")
        for i, level in enumerate(self.up):
            h = self._run(level, h, e, states, mask, skips, "up")
            if i < len(self.upsample):
                h = self.upsample[i](F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(self.norm_out(h)))


class Denoiser(nn.Module):
    """x-prediction view of a UNet: x_hat(z_t, t, c[, w]), whatever the network predicts.

    This is the interface distillation, evaluation and export use (`docs/moment-matching.md` works in
    x-space). For v: x = alpha z - sigma v; for eps: x = (z - sigma eps) / alpha.
    """

    def __init__(self, net: UNet) -> None:
        super().__init__()
        self.net = net

    @property
    def cfg(self) -> UNetConfig:
        return self.net.cfg

    def forward(
        self,
        z: torch.Tensor,
        t: torch.Tensor,
        states: torch.Tensor,
        mask: torch.Tensor,
        w: torch.Tensor | None = None,
        d: torch.Tensor | None = None,
    ) -> torch.Tensor:
        out = self.net(z, t, states, mask, w, d)
        alpha, sigma = (a.to(z.dtype)[:, None, None, None] for a in alpha_sigma_torch(t.float()))
        if self.cfg.prediction == "x":
            return out
        if self.cfg.prediction == "v":
            return alpha * z - sigma * out
        return (z - sigma * out) / alpha


def build_denoiser(cfg: UNetConfig) -> Denoiser:
    return Denoiser(UNet(cfg))


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
