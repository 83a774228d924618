"""Re-estimate a packed teacher's Adam second moments (mm-param's preconditioner) at its final weights.

mm-param preconditions the teacher gradient with P = 1 / (sqrt(v) + eps), v being Adam's EMA of the
squared gradients of the teacher's training loss. The moments of a finished run are in its
checkpoint (`fewstep pack` keeps them, in fp32), but a packed teacher whose run is gone, or whose v
was stored in fp16 (where 97% of a small teacher's entries underflow to 0), needs them again. The
estimate runs the teacher's own training loss (v-MSE, the same data stream, condition dropout, time
and noise draws as `distill.teacher.train`) for N minibatches at the packed weights, clips each gradient as
training did, and accumulates Adam's EMA of g^2 in fp32 with the config's beta2, bias-corrected:

    v_n = beta2 v_{n-1} + (1 - beta2) g_n^2,   v = v_N / (1 - beta2^N)

That is the v a run's Adam would hold after N steps at fixed weights; at the end of training the
weights move slowly, so with beta2 = 0.99 (memory ~100 steps) N ~ 200 gives a close estimate
(`tests/distill/teacher/test_adam_v.py` checks it against a real Adam run on a small model). The data
stream starts after the batches training used (batch index = the packed step), so the estimate is
not fit to the exact minibatches the weights last saw.

`fewstep pack --run models/teacher --out models/teacher --estimate-adam-v 200` rewrites
`adam_v.safetensors` of a packed teacher in place; at batch 64 on 2 CPU cores it takes a few
minutes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file
from tqdm import tqdm

from distill.kit.checkpoint import PACKED_ADAM_V, load_denoiser
from distill.kit.config import ConfigError, TrainConfig
from distill.kit.data import batch_stream, build_dataset
from distill.kit.diffusion import denoising_loss
from distill.kit.text import NULL_CAPTION, TextEncoder
from fewstep.networks import Denoiser

log = logging.getLogger(__name__)


def accumulate_second_moments(
    loss_fn: Callable[[int], torch.Tensor],
    params: dict[str, torch.nn.Parameter],
    n: int,
    beta2: float,
    grad_clip: float | None = None,
    progress: bool = False,
) -> dict[str, torch.Tensor]:
    """Adam's bias-corrected EMA of squared gradients (fp32) over `n` evaluations of `loss_fn(i)`.

    Each gradient is clipped to total norm `grad_clip` first (as the training loop did before
    Adam saw it); the parameters are not changed."""
    if n < 1:
        raise ValueError(f"need at least one minibatch, got {n}")
    if not 0 <= beta2 < 1:
        raise ValueError(f"beta2 must be in [0, 1), got {beta2}")
    names = list(params)
    v = {k: torch.zeros_like(p, dtype=torch.float32) for k, p in params.items()}
    for i in tqdm(range(n), disable=not progress, desc="adam v", dynamic_ncols=True):
        loss = loss_fn(i)
        grads = torch.autograd.grad(loss, [params[k] for k in names], allow_unused=True)
        grads = [torch.zeros_like(params[k]) if g is None else g for k, g in zip(names, grads, strict=True)]
        if grad_clip is not None:
            total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
            scale = min(1.0, grad_clip / (float(total) + 1e-6))  # as torch.nn.utils.clip_grad_norm_
            grads = [g * scale for g in grads]
        for k, g in zip(names, grads, strict=True):
            v[k].mul_(beta2).addcmul_(g.float(), g.float(), value=1 - beta2)
    correction = 1 - beta2**n
    return {k: (t / correction).cpu().contiguous() for k, t in v.items()}


def teacher_loss_fn(
    model: Denoiser,
    cfg: TrainConfig,
    encoder: TextEncoder,
    it: Iterator[dict[str, Any]],
    device: torch.device,
    seed: int = 0,
) -> Callable[[int], torch.Tensor]:
    """`loss_fn(i)`: the teacher's training loss (`distill.teacher.train`: condition dropout, t ~ U(0, 1),
    MSE on the network's own parameterisation) on the next minibatch of `it`, its data stream."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([cfg.seed, seed, 17]).generate_state(1)[0]))
    net = model.net

    def loss_fn(i: int) -> torch.Tensor:
        batch = next(it)
        b = len(batch["caption"])
        drop = (torch.rand(b, generator=gen, device=device) < cfg.data.cond_dropout).tolist()
        states, mask = encoder.encode([NULL_CAPTION if d else c for c, d in zip(batch["caption"], drop, strict=True)])
        x = batch["image"].to(device)
        t = torch.rand(b, generator=gen, device=device)
        eps = torch.randn(x.shape, generator=gen, device=device)
        return denoising_loss(net, x, t, eps, states.to(device), mask.to(device), cfg.model.prediction)

    return loss_fn


def estimate_adam_v(
    teacher: str | Path,
    n: int = 200,
    device: str | torch.device = "cpu",
    progress: bool = True,
    out: str | Path | None = None,
) -> dict[str, torch.Tensor]:
    """Estimate the packed teacher's Adam second moments at its weights from `n` minibatches of its
    training loss (see the module docstring) and write them, fp32, to `out/adam_v.safetensors`
    (default: the teacher's own directory). Returns them."""
    device = torch.device(device)
    model, cfg = load_denoiser(teacher, device=device)
    if model.cfg.guidance_input:
        raise ConfigError(f"{teacher} is a student (it takes w); Adam moments are estimated for teachers")
    model.requires_grad_(True)
    encoder = TextEncoder(cfg.text, device)
    if encoder.dim != cfg.model.text_dim:
        raise ConfigError(f"model.text_dim is {cfg.model.text_dim} but the text encoder gives {encoder.dim}")
    step = int(json.loads((Path(teacher) / "config.json").read_text()).get("step", cfg.steps))
    params = dict(model.named_parameters())
    log.info("estimating Adam v of %s: %d minibatches of %d, beta2 %g", teacher, n, cfg.batch_size, cfg.optim.betas[1])
    with batch_stream(build_dataset(cfg.data, cfg.batch_size, 0, step, None), cfg.data.num_workers) as it:
        loss_fn = teacher_loss_fn(model, cfg, encoder, it, device=device)
        v = accumulate_second_moments(loss_fn, params, n, cfg.optim.betas[1], cfg.optim.grad_clip, progress)
    target = Path(out or teacher)
    target.mkdir(parents=True, exist_ok=True)
    save_file(v, target / PACKED_ADAM_V, metadata={"estimated_from_minibatches": str(n)})
    return v


def second_moment_stats(v: dict[str, torch.Tensor]) -> dict[str, float]:
    """Share of exact zeros and of values below the fp32 normal range, and the median, over all entries
    (what decides whether 1 / (sqrt(v) + eps) preconditions or just rescales by 1 / eps)."""
    flat = torch.cat([t.detach().flatten().float() for t in v.values()])
    tiny = torch.finfo(torch.float32).tiny
    return {
        "entries": float(flat.numel()),
        "zero_share": float((flat == 0).double().mean()),
        "subnormal_share": float(((flat > 0) & (flat < tiny)).double().mean()),
        "median": float(flat.median()),
    }
