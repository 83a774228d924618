"""The training loop the two distillation baselines share (`pd`: distill.progressive, `cd`:
distill.consistency): networks, data, counters, resumable checkpoints, the run directory and the
packed student.

Same conventions as the moment-matching runner (`distill/distiller.py`), so the methods compare on
equal terms: the student is `make_student(teacher, seed)` (the teacher plus a zero-initialised
guidance-scale input), w is drawn per example from [guidance_min, guidance_max] and the teacher
target is classifier-free guided at that w (`guided`), data come from `distill.data.build_dataset`
at the teacher's resolution, and the run directory holds config.json, metrics.jsonl (`step`,
`loss` per row), samples/, an atomic checkpoint/ that resumes exactly (student, optimiser, EMA and
the method's extra networks, RNG, data position), summary.json and the packed student (`student/`).

Both baselines' students are deterministic samplers: DDIM through the student's x-prediction on
the K-step grid (`fewstep.sampler.ddim_sample`); the packed config's `student.sampler` says so.

A method subclasses `BaselineRun` and implements `iteration(batches, step) -> {"loss": ..., ...}`.
Network evaluations are counted in images per pass, by role (`evals`): the teacher's guided passes
count twice (conditional and null halves of one doubled batch).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from distill.checkpoint import _contiguous, load_denoiser, load_optimizer_tensors, optimizer_tensors
from distill.config import ConfigError
from distill.denoise import TextCond, encode_cond
from distill.distill_config import RESUMABLE, DistillConfig
from distill.distiller import CountedBatches, guided, make_student, pack_student, write_student_samples
from distill.plots import plot_loss
from distill.text import TextEncoder
from distill.train import MetricsLog, setup_distributed
from fewstep.networks import Denoiser, count_params

log = logging.getLogger(__name__)
FORMAT = "fewstep-distill-baseline-1"
SAMPLER = "ddim"  # how pd and cd students are sampled (the packed config's `student.sampler`)


class BaselineRun:
    """Networks, optimiser, RNG and counters of one baseline run; subclasses add the method."""

    eval_keys: tuple[str, ...] = ("teacher_forward", "student_forward", "backward")

    def __init__(self, cfg: DistillConfig, teacher_path: str | Path, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.teacher, self.tcfg = load_denoiser(teacher_path, device=device)
        if self.teacher.cfg.guidance_input:
            raise ConfigError("--teacher must be a teacher (no guidance input), not a student")
        self.encoder = TextEncoder(self.tcfg.text, device)
        self.student = make_student(self.teacher, cfg.seed)
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

    def count(self, key: str, images: int) -> None:
        self.evals[key] += images

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

    def col(self, values: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        """Per-example float64 schedule coefficients as a (B, 1, 1, 1) tensor of like's dtype."""
        return torch.as_tensor(np.asarray(values, np.float64), device=like.device).to(like.dtype).view(-1, 1, 1, 1)

    def vec(self, t: np.ndarray, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(np.asarray(t, np.float32), device=like.device)

    def teacher_x(self, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: torch.Tensor) -> torch.Tensor:
        """The frozen teacher's guided x-prediction at per-example w (2 images a pass)."""
        self.count("teacher_forward", 2 * z.shape[0])
        with torch.no_grad():
            return guided(self.teacher, z, t, cond, w)

    def net_x(self, net: Denoiser, z, t, cond: TextCond, w, key: str = "student_forward") -> torch.Tensor:
        """A guidance-conditioned network's x-prediction (one image a pass)."""
        self.count(key, z.shape[0])
        return net(z, t, cond.states, cond.mask, w)

    def lr_at(self, step: int) -> float:
        """Linear warm-up, then constant (the moment-matching runner's schedule)."""
        return self.cfg.lr * min(1.0, (step + 1) / max(1, self.cfg.warmup))

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
            _ema_update(self.ema, self.student, self.cfg.ema_decay)
        return norm

    # -- hooks --
    def iteration(self, batches, step: int) -> dict[str, float]:
        raise NotImplementedError

    def sample_steps(self) -> int:
        """The step count the current student is trained for (samples during training)."""
        return self.cfg.steps

    def packed(self) -> Denoiser:
        """What gets packed: the EMA when on, else the student."""
        return self.ema if self.ema is not None else self.student

    def extra_networks(self) -> dict[str, Denoiser]:
        """Further networks a checkpoint must hold (the EMA, a target or stage teacher)."""
        return {"ema": self.ema} if self.ema is not None else {}

    def state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore `state()` before the networks are loaded (create what extra_networks() names)."""

    def summary_extra(self) -> dict[str, Any]:
        return {}

    # -- checkpoints --
    def save(self, directory: Path, step: int, batch_index: int, extra: dict[str, Any]) -> None:
        tmp = directory.with_name(directory.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_contiguous(self.student.state_dict()), tmp / "student.safetensors")
        optim = optimizer_tensors(self.student, self.opt)
        optim["__rng__.torch"] = self.gen.get_state().cpu()
        save_file(optim, tmp / "optim.safetensors")
        for name, net in self.extra_networks().items():
            save_file(_contiguous(net.state_dict()), tmp / f"{name}.safetensors")
        meta = {"format": FORMAT, "step": step, "batch_index": batch_index, "config": self.cfg.model_dump(mode="json")}
        meta["extra"] = {**extra, "evals": self.evals, "state": self.state()}
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        old = directory.with_name(directory.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if directory.exists():
            directory.rename(old)
        tmp.rename(directory)
        shutil.rmtree(old, ignore_errors=True)

    def load(self, directory: Path) -> dict[str, Any]:
        meta = json.loads((directory / "state.json").read_text())
        if meta.get("format") != FORMAT:
            raise ConfigError(f"{directory}: not a {self.cfg.method} distillation checkpoint")
        self.set_state(meta["extra"].get("state", {}))
        self.student.load_state_dict(load_file(directory / "student.safetensors"))
        optim = load_file(directory / "optim.safetensors")
        self.gen.set_state(optim.pop("__rng__.torch"))
        load_optimizer_tensors(self.student, self.opt, optim)
        for name, net in self.extra_networks().items():
            net.load_state_dict(load_file(directory / f"{name}.safetensors"))
        self.evals = {**self.evals, **meta["extra"].get("evals", {})}
        return meta


def _ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), net.parameters(), strict=True):
            e.lerp_(p, 1.0 - decay)


class _Packable:
    """What `pack_student` reads: `.student`, `.tcfg`, `.cfg`."""

    def __init__(self, run: BaselineRun) -> None:
        self.student, self.tcfg, self.cfg = run.packed(), run.tcfg, run.cfg


def run_baseline(
    make_run,
    cfg: DistillConfig,
    teacher: str | Path,
    out: str | Path,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
    max_seconds: float | None = None,
    pack_unfinished: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a baseline built by `make_run(cfg, teacher, device)`; pack the student when done.

    The arguments mean what they mean for `distill.distiller.distill`."""
    out = Path(out)
    d, device = setup_distributed(cfg.device)
    if d.world > 1:
        raise ConfigError("distillation runs in one process (torchrun with more ranks: not yet)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run: BaselineRun = make_run(cfg, teacher, device)
    state_dir = out / "checkpoint"
    step, batch_index, wall_before = 0, 0, 0.0
    if resume and (state_dir / "state.json").is_file():
        saved = json.loads((state_dir / "state.json").read_text())["config"]
        now = cfg.model_dump(mode="json")
        changed = {k for k in set(saved) | set(now) if saved.get(k) != now.get(k)}
        if changed - RESUMABLE:
            raise ConfigError(f"{out} was started with another config ({sorted(changed - RESUMABLE)}); use a new --out")
        meta = run.load(state_dir)
        step, batch_index, wall_before = meta["step"], meta["batch_index"], meta["extra"].get("wall_s", 0.0)
        log.info("resuming %s at iteration %d", out, step)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    metrics = MetricsLog(out)
    metrics.truncate_after(step)
    data_cfg = cfg.data.model_copy(update={"resolution": run.tcfg.model.resolution})

    batches = CountedBatches(data_cfg, cfg.batch_size, batch_index)
    end = cfg.iters if stop_at is None else min(cfg.iters, stop_at)
    bar = tqdm(
        total=cfg.iters, initial=step, disable=not progress, dynamic_ncols=True, desc=f"{cfg.method} K={cfg.steps}"
    )
    t0 = t_window = time.perf_counter()
    rows: list[dict[str, float]] = []
    while step < end:
        if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
            log.info("time box of %.0f s reached at iteration %d", max_seconds, step)
            break
        rows.append(run.iteration(batches, step))
        step += 1
        bar.update(1)
        if step % cfg.log_every == 0 or step == end:
            now_t = time.perf_counter()
            n = min(len(rows), cfg.log_every)
            row = {k: float(np.mean([r[k] for r in rows[-n:]])) for k in rows[-1]}
            row.update(step=step, it_s=n / (now_t - t_window))
            t_window = now_t
            metrics.write(row)
            bar.set_postfix(loss=f"{row['loss']:.4g}", it_s=f"{row['it_s']:.2f}")
        if step % cfg.sample_every == 0 or step == cfg.iters:
            write_student_samples(
                run.packed(), run.encoder, run.sample_steps(), cfg.guidance_default,
                out / "samples" / f"step{step:06d}.png", sampler=SAMPLER,
            )  # fmt: skip
        timed_out = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if step % cfg.ckpt_every == 0 or step in (cfg.iters, end) or timed_out:
            run.save(state_dir, step, batches.n, {"wall_s": wall_before + time.perf_counter() - t0})
            plot_loss(out / "metrics.jsonl", out / "loss.png", "loss", f"{cfg.method} loss")
    bar.close()
    metrics.close()
    summary = {
        "method": cfg.method,
        "steps": cfg.steps,
        "sampler": SAMPLER,
        "iters": step,
        "wall_s": wall_before + time.perf_counter() - t0,
        "network_forward_images": sum(v for k, v in run.evals.items() if k.endswith("_forward")),
        "network_backward_images": run.evals["backward"],
        "evals": dict(run.evals),
        "student_params": count_params(run.student),
        "device": str(device),
        "finished": step >= cfg.iters,
        **run.summary_extra(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if step >= cfg.iters or pack_unfinished:
        pack_student(_Packable(run), out / "student", summary, sampler=SAMPLER)
        samples = sorted((out / "samples").glob("step*.png"))
        if samples:
            shutil.copyfile(samples[-1], out / "student" / "samples.png")
    return summary
