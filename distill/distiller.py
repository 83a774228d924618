"""`fewstep distill`: few-step students from the frozen teacher (mm-alt, mm-param; pd and cd baselines).

Students (and the mm-alt auxiliary) start as copies of the teacher with a zero-initialised
guidance-scale input (`UNetConfig.guidance_input`), so step 0 reproduces the teacher's conditional
prediction; w is drawn per example from [guidance_min, guidance_max] and the teacher target uses
classifier-free guidance at that w (Meng et al. 2023): one student then serves any w in the range
at one network evaluation per step.

The run directory mirrors `fewstep train`: config.json, metrics.jsonl, samples/, an atomic
checkpoint/ (student, auxiliary, both optimisers, RNG, data position) that resumes exactly, and at
the end a packed student (`student/`, the layout `load_denoiser` and `fewstep export` read) with
its K, guidance range and training cost (network evaluations and wall time).
"""

from __future__ import annotations

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

from distill.checkpoint import (
    _contiguous,
    load_adam_second_moments,
    load_denoiser,
    load_optimizer_tensors,
    optimizer_tensors,
)
from distill.config import ConfigError, DataConfig, TrainConfig
from distill.data import build_dataset, build_loader, to_uint8
from distill.denoise import GuidedDenoiser, TextCond, encode_cond
from distill.distill_config import RESUMABLE, DistillConfig
from distill.grid import save_grid
from distill.moment_matching import (
    aux_loss,
    diffuse,
    functional,
    mm_alt_student_loss,
    mm_param_student_loss,
    posterior_draw,
    preconditioned_direction,
    sample_times,
    teacher_jvp,
)
from distill.plots import plot_loss
from distill.text import TextEncoder
from distill.train import MetricsLog, sample_prompts, setup_distributed
from fewstep.networks import Denoiser, build_denoiser, count_params
from fewstep.rng import SeededNoise
from fewstep.sampler import SAMPLERS, guidance_combine

log = logging.getLogger(__name__)
FORMAT = "fewstep-distill-1"
# Baselines with their own training loops: module.run(cfg, teacher, out, resume, progress, stop_at,
# max_seconds, pack_unfinished) -> summary, packing the student with `pack_student`.
BASELINES = {"pd": "distill.progressive", "cd": "distill.consistency"}


def make_student(teacher: Denoiser, seed: int = 0) -> Denoiser:
    """A copy of the teacher that also takes w (its w embedding's output layer zero-initialised;
    its hidden layer drawn from `seed`, so runs are reproducible)."""
    cfg = teacher.cfg.model_copy(update={"guidance_input": True})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = build_denoiser(cfg).to(next(teacher.parameters()).device)
    missing, unexpected = student.load_state_dict(teacher.state_dict(), strict=False)
    if unexpected or any(".w_mlp." not in f".{k}" for k in missing):
        raise ConfigError(f"teacher and student differ beyond the guidance input: {missing} {unexpected}")
    return student.train().requires_grad_(True)


def guided(call, z: torch.Tensor, t: torch.Tensor, cond: TextCond, w: torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance with per-example w around any forward `call(z, t, states, mask)`."""
    x = call(
        torch.cat([z, z]),
        torch.cat([t, t]),
        torch.cat([cond.states, cond.null_states]),
        torch.cat([cond.mask, cond.null_mask]),
    )
    x_cond, x_null = x.chunk(2)
    return guidance_combine(x_cond, x_null, w.view(-1, 1, 1, 1))


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
            GuidedDenoiser(student), k, encode_cond(encoder, captions), w, noise, next(student.parameters())
        )
        student.train(was)
    save_grid(path, to_uint8(x), captions, cols=8)


class Distiller:
    """Holds the networks, optimisers and counters of one run; `iteration()` is one student update."""

    def __init__(self, cfg: DistillConfig, teacher_path: str | Path, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.teacher, self.tcfg = load_denoiser(teacher_path, device=device)
        if self.teacher.cfg.guidance_input:
            raise ConfigError("--teacher must be a teacher (no guidance input), not a student")
        self.encoder = TextEncoder(self.tcfg.text, device)
        self.student = make_student(self.teacher, cfg.seed)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.aux = self.opt_aux = None
        self.adam_v: dict[str, torch.Tensor] | None = None
        if cfg.method == "mm-alt":
            self.aux = make_student(self.teacher, cfg.seed + 1)
            self.opt_aux = torch.optim.Adam(self.aux.parameters(), lr=cfg.aux_lr or cfg.lr, betas=cfg.betas)
        elif cfg.method == "mm-param":
            self.adam_v = {k: v.to(device) for k, v in load_adam_second_moments(teacher_path).items()}
            missing = set(dict(self.teacher.named_parameters())) - set(self.adam_v)
            if missing:
                raise ConfigError(f"the teacher's Adam second moments lack {sorted(missing)[:3]}")
        else:
            raise ConfigError(f"method: {cfg.method!r} is not implemented by the moment-matching runner")
        self.gen = torch.Generator(device=device)
        self.gen.manual_seed(int(np.random.SeedSequence([cfg.seed, 11]).generate_state(1)[0]))
        self.evals: dict[str, int] = {"forward": 0, "backward": 0}  # image-network passes

    # -- data --
    def draw(self, batch: dict[str, Any]) -> tuple[torch.Tensor, TextCond, torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg, dev = self.cfg, self.device
        x = batch["image"].to(dev)
        b = x.shape[0]
        cond = encode_cond(self.encoder, list(batch["caption"]))
        w = cfg.guidance_min + (cfg.guidance_max - cfg.guidance_min) * torch.rand(b, generator=self.gen, device=dev)
        s, t = sample_times(b, cfg.steps, self.gen, dev)
        z_t = diffuse(x, t, torch.randn(x.shape, generator=self.gen, device=dev))
        return z_t, cond, w, s, t

    def _student(self, net: Denoiser, z, t, cond: TextCond, w) -> torch.Tensor:
        self.evals["forward"] += z.shape[0]
        return net(z, t.float(), cond.states, cond.mask, w)

    def _teacher(self, z, s, cond: TextCond, w) -> torch.Tensor:
        self.evals["forward"] += 2 * z.shape[0]
        with torch.no_grad():
            return guided(self.teacher, z, s.float(), cond, w)

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
    def iteration(self, batches, step: int) -> dict[str, float]:
        cfg = self.cfg
        lr = cfg.lr * min(1.0, (step + 1) / max(1, cfg.warmup))
        if cfg.method == "mm-alt":
            return self._mm_alt(batches, lr)
        return self._mm_param(batches, lr)

    def _mm_alt(self, batches, lr: float) -> dict[str, float]:
        a_losses = [self.aux_update(next(batches), lr) for _ in range(self.cfg.aux_steps)]
        return {"aux_loss": float(np.mean(a_losses)), **self.student_update(next(batches), lr)}

    def aux_update(self, batch: dict[str, Any], lr: float) -> float:
        """One auxiliary step: fit the student's conditional mean E[x_tilde | z_s], teacher-anchored.
        Only the auxiliary's parameters change."""
        cfg, aux = self.cfg, self.aux
        assert aux is not None and self.opt_aux is not None
        z_t, cond, w, s, t = self.draw(batch)
        with torch.no_grad():
            x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))
        target = self._teacher(z_s, s, cond, w)
        pred = self._student(aux, z_s, s, cond, w)
        loss = aux_loss(pred, x_tilde, target)
        self._step(loss, aux, self.opt_aux, (cfg.aux_lr or cfg.lr) * lr / cfg.lr, z_t.shape[0])
        return loss.item()

    def student_update(self, batch: dict[str, Any], lr: float) -> dict[str, float]:
        """One student step: move E[x_tilde | z_s] toward the guided teacher. Only the student changes."""
        assert self.aux is not None
        z_t, cond, w, s, t = self.draw(batch)
        x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))
        target = self._teacher(z_s, s, cond, w)
        with torch.no_grad():
            fake = self._student(self.aux, z_s, s, cond, w)
        loss = mm_alt_student_loss(x_tilde, fake, target, self.cfg.weighting)
        norm = self._step(loss, self.student, self.opt, lr, z_t.shape[0])
        gap = (fake - target).pow(2).mean().sqrt().item()
        return {"student_loss": loss.item(), "gap_rms": gap, "grad_norm": norm}

    def _mm_param(self, batches, lr: float) -> dict[str, float]:
        cfg, teacher = self.cfg, self.teacher
        assert self.adam_v is not None
        params = {k: p.detach().requires_grad_(True) for k, p in teacher.named_parameters()}
        buffers = dict(teacher.named_buffers())
        # Minibatch A: the teacher's training gradient on student samples, preconditioned.
        z_t, cond, w, s, t = self.draw(next(batches))
        with torch.no_grad():
            x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))

        def call(p):
            return lambda *a: torch.func.functional_call(teacher, {**p, **buffers}, a)

        pred = guided(call(params), z_s, s.float(), cond, w)
        self.evals["forward"] += 2 * z_t.shape[0]
        self.evals["backward"] += 2 * z_t.shape[0]
        nu = preconditioned_direction((pred - x_tilde).pow(2).mean(), params, self.adam_v)
        # Minibatch B: the student's surrogate along J_theta nu (forward-mode, one jvp).
        z_t, cond, w, s, t = self.draw(next(batches))
        x_tilde = self._student(self.student, z_t, t, cond, w)
        z_s = posterior_draw(z_t, x_tilde, t, s, torch.randn(z_t.shape, generator=self.gen, device=self.device))
        fn = functional(_Guided(teacher, cond, w), z_s, s.float())
        _, direction = teacher_jvp(fn, _prefixed(params), _prefixed(nu))
        self.evals["forward"] += 4 * z_t.shape[0]  # a jvp costs about two forward passes, guided doubles it
        loss = mm_param_student_loss(x_tilde, direction, cfg.weighting)
        norm = self._step(loss, self.student, self.opt, lr, z_t.shape[0])
        return {"student_loss": loss.item(), "gap_rms": direction.pow(2).mean().sqrt().item(), "grad_norm": norm}

    # -- checkpoints --
    def save(self, directory: Path, step: int, batch_index: int, extra: dict[str, Any]) -> None:
        tmp = directory.with_name(directory.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        save_file(_contiguous(self.student.state_dict()), tmp / "student.safetensors")
        optim = optimizer_tensors(self.student, self.opt)
        optim["__rng__.torch"] = self.gen.get_state().cpu()
        save_file(optim, tmp / "optim.safetensors")
        if self.aux is not None and self.opt_aux is not None:
            save_file(_contiguous(self.aux.state_dict()), tmp / "aux.safetensors")
            save_file(optimizer_tensors(self.aux, self.opt_aux), tmp / "aux_optim.safetensors")
        meta = {"format": FORMAT, "step": step, "batch_index": batch_index, "config": self.cfg.model_dump(mode="json")}
        meta["extra"] = {**extra, "evals": self.evals}
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
            raise ConfigError(f"{directory}: not a distillation checkpoint")
        self.student.load_state_dict(load_file(directory / "student.safetensors"))
        optim = load_file(directory / "optim.safetensors")
        self.gen.set_state(optim.pop("__rng__.torch"))
        load_optimizer_tensors(self.student, self.opt, optim)
        if self.aux is not None and self.opt_aux is not None:
            self.aux.load_state_dict(load_file(directory / "aux.safetensors"))
            load_optimizer_tensors(self.aux, self.opt_aux, load_file(directory / "aux_optim.safetensors"))
        self.evals = dict(meta["extra"].get("evals", self.evals))
        return meta


class CountedBatches:
    """Training batches from `start` on, counting how many were drawn (the resume position)."""

    def __init__(self, data_cfg: DataConfig, batch_size: int, start: int) -> None:
        self.it = iter(build_loader(build_dataset(data_cfg, batch_size, 0, start, None), data_cfg.num_workers))
        self.n = start

    def __next__(self) -> dict[str, Any]:
        self.n += 1
        return next(self.it)


class _Guided(torch.nn.Module):
    """The guided teacher as a module of (z, t), for `torch.func.functional_call` in the jvp."""

    def __init__(self, teacher: Denoiser, cond: TextCond, w: torch.Tensor) -> None:
        super().__init__()
        self.teacher, self.cond, self.w = teacher, cond, w

    def forward(self, z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return guided(self.teacher, z, t, self.cond, self.w)


def _prefixed(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"teacher.{k}": v for k, v in params.items()}


def pack_student(run: Distiller, out: Path, summary: dict[str, Any], sampler: str = "ancestral") -> Path:
    """The student in the packed-model layout (`load_denoiser`, `fewstep export`, `fewstep eval`).

    `run` is anything with `.student`, `.tcfg` and `.cfg`; `sampler` is the shared sampler the student
    was trained for ("ancestral": moment matching; "ddim": progressive and consistency distillation)."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(_contiguous(run.student.state_dict()), out / "model.safetensors")
    tcfg: TrainConfig = run.tcfg
    scfg = tcfg.model_copy(update={"model": run.student.cfg})
    cfg = run.cfg
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


def distill(
    cfg: DistillConfig,
    teacher: str | Path,
    out: str | Path,
    resume: bool = True,
    progress: bool = True,
    stop_at: int | None = None,
    max_seconds: float | None = None,
    pack_unfinished: bool = False,
) -> dict[str, Any]:
    """Run (or resume) a distillation; pack the student when done (or, with `pack_unfinished`,
    whatever it reached when `stop_at` or the `max_seconds` time box ended the run)."""
    out = Path(out)
    if cfg.method in BASELINES:  # progressive and consistency distillation have their own loops
        import importlib

        module = importlib.import_module(BASELINES[cfg.method])
        return module.run(cfg, teacher, out, resume, progress, stop_at, max_seconds, pack_unfinished)
    d, device = setup_distributed(cfg.device)
    if d.world > 1:
        raise ConfigError("distillation runs in one process (torchrun with more ranks: not yet)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = Distiller(cfg, teacher, device)
    state_dir = out / "checkpoint"
    step, batch_index, wall_before = 0, 0, 0.0
    if resume and (state_dir / "state.json").is_file():
        saved = json.loads((state_dir / "state.json").read_text())["config"]
        changed = {
            k
            for k in set(saved) | set(cfg.model_dump(mode="json"))
            if saved.get(k) != cfg.model_dump(mode="json").get(k)
        }
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
            now = time.perf_counter()
            n = min(len(rows), cfg.log_every)
            row = {k: float(np.mean([r[k] for r in rows[-n:]])) for k in rows[-1]}
            row.update(step=step, it_s=n / (now - t_window), loss=row["student_loss"])
            t_window = now
            metrics.write(row)
            bar.set_postfix(gap=f"{row['gap_rms']:.4f}", it_s=f"{row['it_s']:.2f}")
        if step % cfg.sample_every == 0 or step == cfg.iters:
            write_student_samples(
                run.student, run.encoder, cfg.steps, cfg.guidance_default, out / "samples" / f"step{step:06d}.png"
            )
        timed_out = max_seconds is not None and time.perf_counter() - t0 > max_seconds
        if step % cfg.ckpt_every == 0 or step in (cfg.iters, end) or timed_out:
            run.save(state_dir, step, batches.n, {"wall_s": wall_before + time.perf_counter() - t0})
            plot_loss(out / "metrics.jsonl", out / "loss.png", "gap_rms", "RMS of fake - teacher at z_s")
    bar.close()
    metrics.close()
    summary = {
        "method": cfg.method,
        "steps": cfg.steps,
        "iters": step,
        "wall_s": wall_before + time.perf_counter() - t0,
        "network_forward_images": run.evals["forward"],
        "network_backward_images": run.evals["backward"],
        "student_params": count_params(run.student),
        "device": str(device),
        "finished": step >= cfg.iters,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    if step >= cfg.iters or pack_unfinished:
        pack_student(run, out / "student", summary)
        samples = sorted((out / "samples").glob("step*.png"))
        if samples:
            shutil.copyfile(samples[-1], out / "student" / "samples.png")
    return summary
