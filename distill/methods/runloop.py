"""The run every distillation method shares: resumable checkpoints, the training loop, the run
directory and the packed student.

One home for it, so that the moment-matching runner (`distill.methods.mm_alt`, `distill.methods.mm_param`) and the
baselines (`distill.methods.baseline.BaselineRun`: progressive and consistency distillation) resume,
time-box, log, count and pack the same way and their costs compare on equal terms.

A method subclasses `RunBase` and provides `iteration(batches, step) -> {"loss": ..., ...}` and
`networks()` (what a checkpoint holds besides the RNG and counters); the loop, `run_loop`, does the
rest. The run directory holds config.json, metrics.jsonl, samples/, loss.png, an atomic
checkpoint/ (every network and optimiser, the RNG, the data position, the method's `state()`),
summary.json and, when finished (or with `pack_unfinished`), the packed student (`student/`, the
layout `load_denoiser` and `fewstep export` read) with its K, guidance range, sampler and
training cost (network evaluations and wall time). With `ema_decay` > 0 (every method), `student/`
is the EMA of the student and `student-raw/` the raw weights, so both can be evaluated.

Every method shares one learning-rate schedule family (`lr_schedule`): a linear warm-up over
`warmup` updates, then a cosine decay to `min_lr_ratio * lr` at the end of the run (pd: at the end
of each halving stage, since each stage is a fresh optimisation of a new student).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from distill.kit.checkpoint import (
    _contiguous,
    load_denoiser,
    load_optimizer_tensors,
    optimizer_tensors,
    staging_dir,
    swap_in,
    weights_file,
)
from distill.kit.config import ConfigError, DataConfig, TrainConfig
from distill.kit.data import batch_stream, build_dataset, to_uint8
from distill.kit.grid import save_grid
from distill.kit.guidance import GuidedDenoiser, TextCond, encode_cond, guided
from distill.kit.plots import plot_loss
from distill.kit.runinfo import MetricsLog, sample_prompts, setup_distributed
from distill.kit.text import TextEncoder
from distill.methods.config import RESUMABLE, DistillConfig
from distill.methods.student import make_student
from fewstep.bundle import sha256_file
from fewstep.networks import Denoiser, count_params
from fewstep.provenance import provenance
from fewstep.rng import SeededNoise
from fewstep.sampler import SAMPLERS

log = logging.getLogger(__name__)


def lr_schedule(step: int, total: int, cfg: DistillConfig) -> float:
    """The learning rate of update `step` (0-based) of `total`: linear warm-up over `cfg.warmup`
    updates, then a cosine decay from `cfg.lr` to `cfg.min_lr_ratio * cfg.lr` at update `total`."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = min(1.0, (step - cfg.warmup) / max(1, total - cfg.warmup))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


@torch.no_grad()
def ema_update(ema: torch.nn.Module, net: torch.nn.Module, decay: float) -> None:
    """ema <- decay ema + (1 - decay) net, parameter by parameter."""
    for e, p in zip(ema.parameters(), net.parameters(), strict=True):
        e.lerp_(p, 1.0 - decay)


def aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The mean of logged rows, key by key: scalars by np.mean; lists (per-s-bin signals) element by
    element, ignoring NaN (a bin with no example in an update), with None for a bin never seen."""
    out: dict[str, Any] = {}
    # Keys in the last row's order, then any only earlier rows have (a window that spans a change of
    # phase, e.g. the end of a guided warm start, logs both phases' keys, each over its own rows).
    keys = list(dict.fromkeys([*rows[-1], *(k for r in rows for k in r)]))
    for k in keys:
        values = [r[k] for r in rows if k in r]
        v = values[-1]
        if isinstance(v, list):
            arr = np.array(values, dtype=np.float64)
            seen = ~np.isnan(arr)
            n = seen.sum(0)
            mean = np.where(seen, arr, 0.0).sum(0) / np.maximum(n, 1)
            out[k] = [float(m) if c else None for m, c in zip(mean, n, strict=True)]
        else:
            out[k] = float(np.mean(values))
    return out


class CountedBatches:
    """Training batches from `start` on, counting how many were drawn (the resume position).

    A context manager: its loader's worker processes stop when the run's block ends
    (`distill.kit.data.batch_stream`)."""

    def __init__(self, data_cfg: DataConfig, batch_size: int, start: int) -> None:
        self._stream = batch_stream(build_dataset(data_cfg, batch_size, 0, start, None), data_cfg.num_workers)
        self.it = self._stream.__enter__()
        self.n = start

    def __next__(self) -> dict[str, Any]:
        self.n += 1
        return next(self.it)

    def __enter__(self) -> CountedBatches:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stream.__exit__(None, None, None)


class RunBase:
    """Networks, optimisers, RNG and counters of one distillation run.

    Subclasses set `cfg`, `tcfg`, `encoder`, `student`, `opt`, `gen` (a torch.Generator) and
    `evals` (image-network passes by role; keys "forward" or "*_forward", and "backward") in their
    constructor, and implement `iteration`."""

    format: str = "fewstep-distill-1"  # the checkpoint's format tag
    sampler: str = "ancestral"  # the shared sampler the student is trained for
    cfg: DistillConfig
    tcfg: TrainConfig
    encoder: TextEncoder
    student: Denoiser
    opt: torch.optim.Optimizer
    gen: torch.Generator
    evals: dict[str, int]
    device: torch.device
    teacher: Denoiser
    ema: Denoiser | None = None  # the student's EMA when cfg.ema_decay > 0 (subclasses create it)

    def _start_from_teacher(self, cfg: DistillConfig, teacher_path: str | Path, device: torch.device) -> None:
        """What every method's constructor begins with, so that all distil the same teacher into the
        same starting student: the config and device, the frozen teacher (a packed student is refused:
        it already has the guidance input the student adds), its text encoder, and the student, the
        teacher plus a zero-initialised guidance input (`make_student`, seeded by `cfg.seed`)."""
        self.cfg, self.device = cfg, device
        self.teacher, self.tcfg = load_denoiser(teacher_path, device=device)
        if self.teacher.cfg.guidance_input:
            raise ConfigError("--teacher must be a teacher (no guidance input), not a student")
        self.encoder = TextEncoder(self.tcfg.text, device)
        self.student = make_student(self.teacher, cfg.seed)

    def autocast(self) -> AbstractContextManager[Any]:
        """bf16 autocast for network forward passes on CUDA when `cfg.bf16` (a no-op on CPU)."""
        if self.device.type == "cuda" and self.cfg.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    # -- forward passes every method makes, counted in images by role (`evals`) --
    def count(self, key: str, images: int) -> None:
        self.evals[key] = self.evals.get(key, 0) + images

    def teacher_x(self, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: torch.Tensor,
                  key: str = "teacher_forward") -> torch.Tensor:  # fmt: skip
        """The frozen teacher's classifier-free guided x-prediction at per-example w (2 images a pass:
        the conditional and null halves of one doubled batch), without gradients."""
        self.count(key, 2 * z.shape[0])
        with torch.no_grad(), self.autocast():
            return guided(self.teacher, z, t, cond, w).float()

    def net_x(self, net: Denoiser, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: torch.Tensor,
              key: str = "student_forward") -> torch.Tensor:  # fmt: skip
        """A guidance-conditioned network's x-prediction (one image a pass), with gradients."""
        self.count(key, z.shape[0])
        with self.autocast():
            return net(z, t, cond.states, cond.mask, w).float()

    # -- hooks --
    def iteration(self, batches: CountedBatches, step: int) -> dict[str, float]:
        """One student update; the row must hold "loss" (logged, plotted unless `curve` says otherwise)."""
        raise NotImplementedError

    def curve(self) -> tuple[str, str]:
        """The metrics.jsonl key shown on the progress bar and in loss.png, and its axis label."""
        return "loss", f"{self.cfg.method} loss"

    def networks(self) -> dict[str, tuple[Denoiser, torch.optim.Optimizer | None]]:
        """Everything a checkpoint holds, by name, with its optimiser (None: not trained directly)."""
        return {"student": (self.student, self.opt)}

    def packed(self) -> Denoiser:
        """What gets sampled during training and packed at the end: the EMA when on, else the student."""
        return self.ema if self.ema is not None else self.student

    @classmethod
    def images_for(cls, cfg: DistillConfig, iters: int) -> int:
        """Training images (image passes) the first `iters` iterations draw: the budget unit that
        compares methods, batch sizes and machines (`iters_for_budget`). Default: one batch an
        iteration (pd, cd)."""
        return cfg.batch_size * iters

    def sample_steps(self) -> int:
        """The step count the current student is trained for (samples during training)."""
        return self.cfg.steps

    def state(self) -> dict[str, Any]:
        """JSON state beyond the networks (restored by `set_state` before the networks load)."""
        return {}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore `state()` before the networks are loaded (create what `networks()` names)."""

    def summary_extra(self) -> dict[str, Any]:
        return {}

    # -- checkpoints --
    @staticmethod
    def _files(name: str) -> tuple[str, str]:
        """Weights and optimiser file of a network (the student's optimiser file also holds the RNG)."""
        return f"{name}.safetensors", "optim.safetensors" if name == "student" else f"{name}_optim.safetensors"

    def save(self, directory: Path, step: int, batch_index: int, extra: dict[str, Any]) -> None:
        """Write the checkpoint atomically: a temporary directory renamed over the old one."""
        tmp = staging_dir(directory)
        for name, (net, opt) in self.networks().items():
            weights, optim_file = self._files(name)
            save_file(_contiguous(net.state_dict()), tmp / weights)
            if opt is not None:
                optim = optimizer_tensors(net, opt)
                if name == "student":
                    optim["__rng__.torch"] = self.gen.get_state().cpu()
                save_file(optim, tmp / optim_file)
        meta = {
            "format": self.format,
            "step": step,
            "batch_index": batch_index,
            "config": self.cfg.model_dump(mode="json"),
            "extra": {**extra, "evals": self.evals, "state": self.state()},
        }
        (tmp / "state.json").write_text(json.dumps(meta, indent=2))
        swap_in(tmp, directory)

    def load(self, directory: Path) -> dict[str, Any]:
        meta = json.loads((directory / "state.json").read_text())
        if meta.get("format") != self.format:
            raise ConfigError(f"{directory}: not a {self.cfg.method} distillation checkpoint")
        self.set_state(meta["extra"].get("state", {}))
        for name, (net, opt) in self.networks().items():
            weights, optim_file = self._files(name)
            net.load_state_dict(load_file(directory / weights))
            if opt is not None:
                optim = load_file(directory / optim_file)
                if name == "student":
                    self.gen.set_state(optim.pop("__rng__.torch"))
                load_optimizer_tensors(net, opt, optim)
        self.evals = {**self.evals, **meta["extra"].get("evals", {})}
        return meta


def write_student_samples(
    student: Denoiser, encoder: TextEncoder, k: int, w: float, path: Path, sampler: str = "ancestral"
) -> None:
    """A grid of the student's k-step samples (`sampler`: "ancestral" for mm, "ddim" for pd and cd)."""
    captions = sample_prompts()
    cfg = student.cfg
    noise = SeededNoise(range(len(captions)), (cfg.in_channels, cfg.resolution, cfg.resolution))
    with torch.inference_mode():
        was = student.training
        student.eval()
        x = SAMPLERS[sampler](
            GuidedDenoiser(student, k), k, encode_cond(encoder, captions), w, noise, next(student.parameters())
        )
        student.train(was)
    save_grid(path, to_uint8(x), captions, cols=8)


def pack_student(
    student: Denoiser, tcfg: TrainConfig, cfg: DistillConfig, out: Path, summary: dict[str, Any], sampler: str
) -> Path:
    """The student in the packed-model layout (`load_denoiser`, `fewstep export`, `fewstep eval`):
    the teacher's config with the student's network, and what the student was trained for
    (`sampler`: "ancestral" for moment matching, "ddim" for progressive and consistency
    distillation), so export and serving use exactly what training assumed."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(student.state_dict()), out / "model.safetensors")
    scfg = tcfg.model_copy(update={"model": student.cfg})
    info = {
        "config": scfg.model_dump(mode="json"),
        "step": summary["iters"],
        "student": {
            "method": cfg.method,
            "steps": cfg.steps,
            "sampler": sampler,
            "guidance": [cfg.guidance_min, cfg.guidance_default, cfg.guidance_max],
            "distill_config": cfg.model_dump(mode="json"),
            "training": summary,
        },
    }
    (out / "config.json").write_text(json.dumps(info, indent=2))
    return out


@dataclass(frozen=True)
class RunOptions:
    """How a distillation run goes, whatever the method (`fewstep distill`'s flags)."""

    resume: bool = True  # continue from out/checkpoint when there is one
    progress: bool = True  # a progress bar
    stop_at: int | None = None  # checkpoint and stop at this iteration
    max_seconds: float | None = None  # time box: checkpoint and stop after this long
    pack_unfinished: bool = False  # pack the student even if stop_at or the time box ended the run


def iters_for_budget(run_class: type[RunBase], cfg: DistillConfig, images: int) -> int:
    """The fewest iterations of `run_class` under `cfg` that draw at least `images` training images
    (`RunBase.images_for`): how `fewstep distill --budget-images` sizes a run, so that runs compare
    at equal image passes rather than equal updates or equal wall time."""
    if images <= 0:
        raise ConfigError(f"--budget-images must be positive, got {images}")
    lo, hi = 1, max(1, images)  # one image an iteration at the least
    while lo < hi:
        mid = (lo + hi) // 2
        if run_class.images_for(cfg, mid) >= images:
            hi = mid
        else:
            lo = mid + 1
    return lo


def run_loop(
    make_run: Callable[[DistillConfig, str | Path, torch.device], RunBase],
    cfg: DistillConfig,
    teacher: str | Path,
    out: str | Path,
    options: RunOptions = RunOptions(),
) -> dict[str, Any]:
    """Run (or resume) the run `make_run(cfg, teacher, device)` builds; pack the student when done
    (or, with `options.pack_unfinished`, whatever it reached when `stop_at` or the `max_seconds`
    time box ended the run). A checkpoint of another config is refused naming the differing keys."""
    out = Path(out)
    resume, progress, stop_at, max_seconds = options.resume, options.progress, options.stop_at, options.max_seconds
    d, device = setup_distributed(cfg.device)
    if d.world > 1:
        raise ConfigError("distillation runs in one process (torchrun with more ranks: not yet)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = make_run(cfg, teacher, device)
    # A resumed student must keep its teacher: the checkpoint records the teacher's weights.
    teacher_sha = sha256_file(weights_file(teacher)[0])
    state_dir = out / "checkpoint"
    step, batch_index, wall_before = 0, 0, 0.0
    if resume and (state_dir / "state.json").is_file():
        saved = json.loads((state_dir / "state.json").read_text())["config"]
        now = cfg.model_dump(mode="json")
        # A checkpoint written before each method had its own config type holds every method's keys
        # (then at their defaults, which validation enforced): only this method's keys compare, and a
        # key added since compares as its default.
        defaults = type(cfg)().model_dump(mode="json")
        changed = {k for k in now if saved.get(k, defaults[k]) != now[k]}
        if changed - RESUMABLE:
            raise ConfigError(f"{out} was started with another config ({sorted(changed - RESUMABLE)}); use a new --out")
        meta = run.load(state_dir)
        was = meta["extra"].get("teacher_sha256")
        if was is not None and was != teacher_sha:
            raise ConfigError(
                f"{out} was distilled from another teacher (weights sha256 {was[:12]}, now {teacher_sha[:12]}); "
                "use a new --out"
            )
        step, batch_index, wall_before = meta["step"], meta["batch_index"], meta["extra"].get("wall_s", 0.0)
        log.info("resuming %s at iteration %d", out, step)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    metrics = MetricsLog(out)
    metrics.truncate_after(step)
    data_cfg = cfg.data.model_copy(update={"resolution": run.tcfg.model.resolution})
    key, label = run.curve()

    with CountedBatches(data_cfg, cfg.batch_size, batch_index) as batches:
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
            row = run.iteration(batches, step)
            row.setdefault("lr", float(run.opt.param_groups[0]["lr"]))
            rows.append(row)
            step += 1
            bar.update(1)
            if step % cfg.log_every == 0 or step == end:
                now_t = time.perf_counter()
                n = min(len(rows), cfg.log_every)
                row = aggregate(rows[-n:])
                row.update(step=step, images=batches.n * cfg.batch_size, it_s=n / (now_t - t_window))
                t_window = now_t
                metrics.write(row)
                bar.set_postfix({key: f"{row.get(key, row['loss']):.4g}", "it_s": f"{row['it_s']:.2f}"})
            if step % cfg.sample_every == 0 or step == cfg.iters:
                path = out / "samples" / f"step{step:06d}.png"
                write_student_samples(
                    run.packed(), run.encoder, run.sample_steps(), cfg.guidance_default, path, sampler=run.sampler
                )
            timed_out = max_seconds is not None and time.perf_counter() - t0 > max_seconds
            if step % cfg.ckpt_every == 0 or step in (cfg.iters, end) or timed_out:
                wall = wall_before + time.perf_counter() - t0
                run.save(state_dir, step, batches.n, {"wall_s": wall, "teacher_sha256": teacher_sha})
                plot_loss(out / "metrics.jsonl", out / "loss.png", key, label)
    bar.close()
    metrics.close()
    summary = {
        "method": cfg.method,
        "steps": cfg.steps,
        "sampler": run.sampler,
        "iters": step,
        "wall_s": wall_before + time.perf_counter() - t0,
        "network_forward_images": sum(v for k, v in run.evals.items() if k == "forward" or k.endswith("_forward")),
        "network_backward_images": run.evals["backward"],
        # The budget: training images drawn (image passes), and network image-evaluations (forward and
        # backward) per image pass, so runs of any method, batch size or machine compare.
        "image_passes": batches.n * cfg.batch_size,
        "evals_per_image_pass": (sum(run.evals.values())) / max(1, batches.n * cfg.batch_size),
        "evals": dict(run.evals),
        "student_params": count_params(run.student),
        "device": str(device),
        "finished": step >= cfg.iters,
        # The code of this slice (a resumed run may span commits; each slice's log names its own).
        **provenance(),
        **run.summary_extra(),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if step >= cfg.iters or options.pack_unfinished:
        pack_student(run.packed(), run.tcfg, cfg, out / "student", summary, run.sampler)
        if run.packed() is not run.student:  # student/ is the EMA: the raw weights beside it
            pack_student(run.student, run.tcfg, cfg, out / "student-raw", {**summary, "weights": "raw"}, run.sampler)
        samples = sorted((out / "samples").glob("step*.png"))
        if samples:
            shutil.copyfile(samples[-1], out / "student" / "samples.png")
    return summary
