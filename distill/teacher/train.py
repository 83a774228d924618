"""Teacher training: `fewstep train --preset shapes32-cpu --out runs/teacher`.

v-prediction MSE (Salimans and Ho 2022) on the VP schedule of `fewstep.schedule`, t ~ U(0, 1);
AdamW with linear warmup and cosine decay, gradient clipping, EMA, bf16 autocast on CUDA,
condition dropout (the caption replaced by the null caption '') so the same network is the
unconditional model for classifier-free guidance.

Runs single-process or under `torchrun` (DDP: nccl on CUDA, gloo on CPU). Every rank draws its own
data stream; only rank 0 writes. Checkpoints (see `distill.kit.checkpoint`) resume exactly: batch n
of the data, the noise generator and the optimizer state all continue where they stopped.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from distill.kit.checkpoint import TrainState, load_training_state, read_state, save_checkpoint
from distill.kit.config import ConfigError, TrainConfig, config_diff, validate_config
from distill.kit.data import batch_stream, build_dataset, check_source, to_uint8
from distill.kit.diffusion import denoising_loss
from distill.kit.grid import save_grid
from distill.kit.guidance import GuidedDenoiser, encode_cond
from distill.kit.plots import plot_loss
from distill.kit.runinfo import Dist, MetricsLog, sample_prompts, setup_distributed, weights_digest
from distill.kit.text import NULL_CAPTION, TextEncoder
from fewstep.networks import build_denoiser, count_params
from fewstep.rng import SeededNoise
from fewstep.sampler import ancestral_sample

log = logging.getLogger(__name__)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Linear warmup, then cosine decay to `min_lr_ratio` at the last step."""
    o = cfg.optim
    if step < o.warmup_steps:
        return (step + 1) / o.warmup_steps
    progress = min(1.0, (step - o.warmup_steps) / max(1, cfg.steps - o.warmup_steps))
    return o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """EMA with the usual warmup: decay_n = min(decay, (1 + n) / (10 + n))."""
    d = min(decay, (1 + step) / (10 + step))
    for pe, pm in zip(ema.parameters(), model.parameters(), strict=True):
        pe.lerp_(pm.detach(), 1 - d)
    for be, bm in zip(ema.buffers(), model.buffers(), strict=True):
        be.copy_(bm)


def write_samples(model, encoder, cfg: TrainConfig, path: Path, device: torch.device) -> None:
    captions = sample_prompts()
    cond = encode_cond(encoder, captions)
    noise = SeededNoise(range(len(captions)), (cfg.model.in_channels, cfg.model.resolution, cfg.model.resolution))
    like = torch.zeros(1, device=device)
    with torch.inference_mode():
        x = ancestral_sample(GuidedDenoiser(model), cfg.sample_steps, cond, cfg.sample_guidance, noise, like)
    save_grid(path, to_uint8(x), captions, cols=8)


def warm_start(model: torch.nn.Module, source: str | Path) -> list[str]:
    """Initialise `model` from a packed model's weights; returns the parameters it did not have.

    A network may grow (attention at another resolution, another head count of the same width):
    its new layers keep their initialisation, and because every attention block and residual
    branch zero-initialises its output, the grown network starts as the same function. Weights the
    model has no place for, or of another shape, are errors naming them: that is another network.
    """
    from safetensors.torch import load_file

    from distill.kit.checkpoint import weights_file

    file, _ = weights_file(source)
    saved = load_file(file)
    own = model.state_dict()
    extra = sorted(set(saved) - set(own))
    wrong = sorted(k for k in saved if k in own and saved[k].shape != own[k].shape)
    if extra or wrong:
        raise ConfigError(
            f"init_from: {source} is not a smaller version of this network: "
            + "; ".join(
                filter(None, [f"unknown {extra[:4]}" if extra else "", f"other shapes {wrong[:4]}" if wrong else ""])
            )
        )
    missing = sorted(set(own) - set(saved))
    model.load_state_dict({**own, **saved})
    log.info("warm start from %s; %d tensors keep their initialisation: %s", source, len(missing), missing[:6])
    return missing


def _check_resume(out: Path, cfg: TrainConfig) -> bool:
    ckpt = out / "checkpoint"
    if not (ckpt / "state.json").is_file():
        return False
    saved = validate_config(read_state(ckpt)["config"])
    diff = config_diff(saved, cfg)
    if diff:
        raise ConfigError(
            f"{ckpt} was trained with a different config; differing keys: {', '.join(diff)}. "
            "Use another --out, or resume with the same config (only steps and reporting intervals may change)."
        )
    return True


@dataclass
class _Run:
    """One teacher run's networks, optimiser, RNG, position and text encoder (what `train` steps)."""

    model: torch.nn.Module
    ema: torch.nn.Module
    opt: torch.optim.Optimizer
    gen: torch.Generator
    state: TrainState
    net: torch.nn.Module  # the network the loss runs through (DDP-wrapped under torchrun)
    encoder: TextEncoder


def _build(cfg: TrainConfig, out: Path, d: Dist, device: torch.device, resuming: bool, encoder: TextEncoder) -> _Run:
    """The networks at step 0 (or warm-started, or resumed from out/checkpoint), identical on every rank."""
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_denoiser(cfg.model).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    ema = copy.deepcopy(model).requires_grad_(False).eval()
    opt = torch.optim.AdamW(
        model.parameters(), lr=cfg.optim.lr, betas=cfg.optim.betas, weight_decay=cfg.optim.weight_decay
    )
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([cfg.seed, d.rank, 7]).generate_state(1)[0]))
    state = TrainState(0, 0, {"skipped": 0, "wall_s": 0.0})
    if cfg.init_from and not resuming:
        warm_start(model, cfg.init_from)
        ema.load_state_dict(model.state_dict())
    if resuming:
        state = load_training_state(out / "checkpoint", model, ema, opt, gen)
        if d.main:
            log.info("resuming %s at step %d", out, state.step)
    if state.step >= cfg.steps:
        log.info("already trained to step %d", state.step)
    net = model.net
    if d.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            net, device_ids=[d.local_rank] if device.type == "cuda" else None
        )
    return _Run(model, ema, opt, gen, state, net, encoder)


def _step(
    run: _Run, cfg: TrainConfig, batch: dict[str, Any], device: torch.device, autocast
) -> tuple[float, float, float]:
    """One optimisation step of the teacher on `batch` (condition dropout, t ~ U(0, 1), the loss of
    `distill.kit.diffusion.denoising_loss`, clipping, AdamW, EMA). Returns (loss, gradient norm,
    seconds spent encoding text)."""
    state, gen = run.state, run.gen
    b = len(batch["caption"])
    drop = (torch.rand(b, generator=gen, device=device) < cfg.data.cond_dropout).tolist()
    captions = [NULL_CAPTION if dr else c for c, dr in zip(batch["caption"], drop, strict=True)]
    t_text = time.perf_counter()
    states, mask = run.encoder.encode(captions)
    text_s = time.perf_counter() - t_text
    x = batch["image"].to(device)
    if cfg.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    t = torch.rand(b, generator=gen, device=device)
    eps = torch.randn(x.shape, generator=gen, device=device)
    for g in run.opt.param_groups:
        g["lr"] = cfg.optim.lr * lr_factor(state.step, cfg)
    loss = denoising_loss(run.net, x, t, eps, states, mask, cfg.model.prediction, autocast)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(run.model.parameters(), cfg.optim.grad_clip))
    run.opt.step()
    ema_update(run.ema, run.model, cfg.optim.ema_decay, state.step)
    state.step += 1
    return loss.item(), grad_norm, text_s


def _summary(run: _Run, d: Dist, losses: list[float], wall_s: float) -> dict[str, Any]:
    """What `train` returns and writes to summary.json: steps, loss, time, and whether every rank
    ended with the same weights (DDP keeps them in sync; the digests prove it)."""
    digests = [weights_digest(run.model)]
    if d.world > 1:
        gathered: list[Any] = [None] * d.world
        dist.all_gather_object(gathered, digests[0])
        digests = gathered
    enc = run.encoder
    return {
        "steps": run.state.step,
        "final_loss": float(np.mean(losses[-100:])) if losses else None,
        "wall_s": wall_s,
        "params": count_params(run.model),
        "world_size": d.world,
        "rank_weight_digests": digests,
        "ranks_in_sync": len(set(digests)) == 1,
        "skipped_images": run.state.extra.get("skipped", 0),
        "text_cache_hit_rate": enc.hits / max(1, enc.hits + enc.misses),
    }


def train(
    cfg: TrainConfig, out: str | Path, resume: bool = True, progress: bool = True, stop_at: int | None = None
) -> dict[str, Any]:
    """Train a teacher; returns the summary also written to `out/summary.json` (rank 0).

    `stop_at` ends this run early at that step with a checkpoint (time-sliced or preemptible
    training); a later call resumes it to `cfg.steps` on the same schedule.
    """
    out = Path(out)
    d, device = setup_distributed(cfg.device)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # Every check that can fail runs before anything is written.
    resuming = resume and _check_resume(out, cfg)
    check_source(cfg.data)
    encoder = TextEncoder(cfg.text, device)
    if encoder.dim != cfg.model.text_dim:
        raise ConfigError(f"model.text_dim is {cfg.model.text_dim} but the text encoder gives {encoder.dim}")
    if d.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    run = _build(cfg, out, d, device, resuming, encoder)
    state = run.state
    metrics = MetricsLog(out) if d.main else None
    if metrics is not None and resuming:
        metrics.truncate_after(state.step)

    remaining = max(0, cfg.steps - state.step)
    dataset = build_dataset(cfg.data, cfg.batch_size, d.rank, state.batch_index, None)
    # the workers stop when the loop ends (distill.kit.data.batch_stream), not when a collection finds them
    with batch_stream(dataset, cfg.data.num_workers) if remaining else nullcontext(iter(())) as loader:
        autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" and cfg.bf16 else nullcontext()
        bar = tqdm(total=cfg.steps, initial=state.step, disable=not (progress and d.main), dynamic_ncols=True)
        losses: list[float] = []
        t_window, text_s, t0 = time.perf_counter(), 0.0, time.perf_counter()
        wall_before = float(state.extra.get("wall_s", 0.0))
        end = cfg.steps if stop_at is None else min(cfg.steps, stop_at)
        while state.step < end:
            batch = next(loader)
            state.batch_index += 1
            state.extra["skipped"] = state.extra.get("skipped", 0) + int(batch["skipped"])
            if len(batch["caption"]) == 0:
                continue
            loss, grad_norm, step_text_s = _step(run, cfg, batch, device, autocast)
            text_s += step_text_s
            losses.append(loss)
            bar.update(1)
            if state.step % cfg.log_every == 0 or state.step == cfg.steps:
                now = time.perf_counter()
                n = min(len(losses), cfg.log_every)
                row = {
                    "step": state.step,
                    "loss": float(np.mean(losses[-n:])),
                    "lr": run.opt.param_groups[0]["lr"],
                    "grad_norm": grad_norm,
                    "it_s": n / (now - t_window),
                    "text_share": text_s / (now - t_window),
                    "skipped": state.extra["skipped"],
                }
                t_window, text_s = now, 0.0
                bar.set_postfix(loss=f"{row['loss']:.4f}", it_s=f"{row['it_s']:.2f}")
                if metrics is not None:
                    metrics.write(row)
            if d.main and (state.step % cfg.sample_every == 0 or state.step == cfg.steps):
                write_samples(run.ema, encoder, cfg, out / "samples" / f"step{state.step:07d}.png", device)
            if d.main and (state.step % cfg.ckpt_every == 0 or state.step in (cfg.steps, end)):
                state.extra["wall_s"] = wall_before + time.perf_counter() - t0
                save_checkpoint(out / "checkpoint", cfg, state, run.model, run.ema, run.opt, run.gen)
                plot_loss(out / "metrics.jsonl", out / "loss.png")
    bar.close()

    summary = _summary(run, d, losses, wall_before + time.perf_counter() - t0)
    if d.main:
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        if metrics is not None:
            metrics.close()
    if d.world > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary
