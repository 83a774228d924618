"""PSO preference tuning (`fewstep tune --method pso`): Pairwise Sample Optimisation of a distilled
few-step student (Miao et al. 2024, "Tuning Timestep-Distilled Diffusion Model Using Pairwise
Sample Optimization"), online, with the evaluator as the judge.

Each update draws prompts (from a shapes-world stream the evaluation never uses), samples two
images per prompt from the current student with the same prompt and two seeds (its own K-step
sampler, its own w), and asks the judge which one follows the prompt better (`adherence_score`:
the prompt fully satisfied, then the share of its stated attributes; ties give no pair). The
preferred sample x_w and the other x_l are then noised to one of the student's own grid times
(t from {1/K, ..., 1}: PSO's point for timestep-distilled models, which are only trained, and only
meaningful, at their sampling times), and the Diffusion-DPO loss

    L = -log sigmoid( -beta [ (e_theta(x_w) - e_ref(x_w)) - (e_theta(x_l) - e_ref(x_l)) ] ),
    e(x) = mean |f(z_t, t, c, w) - x|^2,  z_t = alpha_t x + sigma_t eps (the same t and eps in all four),

raises the student's denoising likelihood of the preferred sample over the other, relative to a
frozen reference copy of the student (the DPO anchor that keeps it near what it was). The
student's x prediction at its grid time is exactly its sampling step, so the margin is the one
the sampler sees.

The judge is a small interface (`Judge`): the learned evaluator in use (`EvaluatorJudge`), any
callable in tests. Because the student is tuned to please that judge, its figures must also be
reported by the second, independent one (`fewstep eval --analytic`, `distill.evaluation.analytic`).

The result is a packed student in the layout `fewstep distill` writes (`out/student/`), with the
source's `student` block (K, sampler, guidance range, distillation cost) and a `tuning` block
(the method, its config, the source's weights hash and the tuning cost), so it evaluates, exports
and serves like any student. The run directory also holds metrics.jsonl, loss.png and
summary.json. A run is short (about 100 updates here) and is not resumable.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tqdm import tqdm

import shapesworld as shapes
from distill.kit.checkpoint import PACKED_CONFIG, load_denoiser, student_info, weights_file
from distill.kit.config import ConfigError
from distill.kit.data import to_uint8
from distill.kit.diffusion import diffuse
from distill.kit.grid import save_grid
from distill.kit.guidance import GuidedDenoiser, TextCond, encode_cond
from distill.kit.plots import plot_loss
from distill.kit.runinfo import MetricsLog, sample_prompts
from distill.kit.text import TextEncoder
from distill.tune.config import PsoConfig
from fewstep.bundle import sha256_file
from fewstep.networks import Denoiser
from fewstep.rng import SeededNoise
from fewstep.sampler import SAMPLERS
from fewstep.schedule import time_grid

log = logging.getLogger(__name__)
SEED_SPACE = 2**31 - 1


class Judge(Protocol):
    """Scores images against their prompts: higher is better, equal scores are no preference."""

    def __call__(self, images: np.ndarray, specs: Sequence[shapes.PromptSpec]) -> np.ndarray: ...


def adherence_score(scenes: Sequence[shapes.Scene], specs: Sequence[shapes.PromptSpec]) -> np.ndarray:
    """Per image: 1 if the scene satisfies everything the prompt says, plus half the share of the
    prompt's checks it passes (`shapesworld.satisfies`), so a near miss beats a far one."""
    out = []
    for scene, spec in zip(scenes, specs, strict=True):
        checks = shapes.satisfies(scene, spec)
        parts = [v for k, v in checks.items() if k != "all"]
        out.append(float(checks["all"]) + 0.5 * sum(parts) / len(parts))
    return np.array(out)


class EvaluatorJudge:
    """The learned evaluator (`distill.evaluation.evaluator`) as the judge."""

    def __init__(self, path: str | Path) -> None:
        from distill.evaluation.evaluator import load_evaluator

        self.model, _ = load_evaluator(path)

    def __call__(self, images: np.ndarray, specs: Sequence[shapes.PromptSpec]) -> np.ndarray:
        from distill.evaluation.evaluator import predict

        if images.shape[1] != self.model.cfg.resolution:
            raise ConfigError(
                f"the evaluator reads {self.model.cfg.resolution}px images; the student draws {images.shape[1]}px"
            )
        scenes, _ = predict(self.model, images)
        return adherence_score(scenes, specs)


def preferences(scores_a: np.ndarray, scores_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(keep, a_wins) per pair: pairs with different scores are kept; a_wins says which one won."""
    return scores_a != scores_b, scores_a > scores_b


def pso_loss(
    err_w: torch.Tensor, err_l: torch.Tensor, ref_w: torch.Tensor, ref_l: torch.Tensor, beta: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, margin): the Diffusion-DPO loss -log sigmoid(-beta margin), margin = (err_w - ref_w) -
    (err_l - ref_l) per pair: negative when the student denoises the preferred sample better,
    relative to the reference, than the other one."""
    margin = (err_w - ref_w.detach()) - (err_l - ref_l.detach())
    return -F.logsigmoid(-beta * margin).mean(), margin.detach()


def denoising_error(
    net: Denoiser, x: torch.Tensor, t: torch.Tensor, eps: torch.Tensor, cond: TextCond, w: torch.Tensor
) -> torch.Tensor:
    """e(x) = mean |f(z_t, t, c, w) - x|^2 per example, z_t = alpha_t x + sigma_t eps (`kit.diffusion`)."""
    z = diffuse(x, t, eps)
    pred = net(z, t.float(), cond.states, cond.mask, w)
    return (pred.float() - x).pow(2).flatten(1).mean(1)


def _subset(cond: TextCond, idx: torch.Tensor) -> TextCond:
    return TextCond(cond.states[idx], cond.mask[idx], cond.null_states[idx], cond.null_mask[idx])


class PsoTuner:
    """The student being tuned, its frozen reference, the judge and one update (`update`)."""

    def __init__(self, cfg: PsoConfig, model: str | Path, judge: Judge, device: torch.device | str = "cpu") -> None:
        info = student_info(model)
        if info is None:
            raise ConfigError(f"--model {model}: not a packed student (no student block in its config.json)")
        self.cfg, self.device, self.judge, self.source, self.info = cfg, torch.device(device), judge, Path(model), info
        self.policy, self.tcfg = load_denoiser(model, device=self.device)
        if not self.policy.cfg.guidance_input:
            raise ConfigError(f"--model {model}: PSO tunes a student that takes w (a guidance input)")
        self.reference = copy.deepcopy(self.policy).eval().requires_grad_(False)
        self.policy.train().requires_grad_(True)
        self.encoder = TextEncoder(self.tcfg.text, self.device)
        self.steps, self.sampler = int(info["steps"]), str(info["sampler"])
        self.w = float(cfg.guidance if cfg.guidance is not None else info["guidance"][1])
        self.grid = torch.tensor(time_grid(self.steps)[:-1], dtype=torch.float64)  # 1, ..., 1/K
        self.opt = torch.optim.Adam(self.policy.parameters(), lr=cfg.lr, betas=cfg.betas)
        self.gen = torch.Generator().manual_seed(cfg.seed)
        self.evals = {"sample_forward": 0, "loss_forward": 0, "backward": 0}

    def prompts(self, step: int) -> tuple[list[str], list[shapes.PromptSpec]]:
        """The update's prompts: items of the tuning stream (`prompt_seed`), never the evaluation's."""
        cfg, n = self.cfg, self.cfg.prompts_per_update
        items = [shapes.sample(cfg.prompt_seed, step * n + i, "train", cfg.p_two_objects) for i in range(n)]
        return [it.caption for it in items], [shapes.parse_prompt(it.caption) for it in items]

    def sample(self, net: Denoiser, cond: TextCond, seeds: list[int]) -> torch.Tensor:
        """The student's own K-step samples (its sampler, its w), clamped to [-1, 1], no gradient."""
        res, ch = self.tcfg.model.resolution, self.tcfg.model.in_channels
        like = torch.zeros(1, device=self.device)
        was = net.training
        net.eval()
        with torch.no_grad():
            x = SAMPLERS[self.sampler](
                GuidedDenoiser(net), self.steps, cond, self.w, SeededNoise(seeds, (ch, res, res)), like
            )
        net.train(was)
        self.evals["sample_forward"] += len(seeds) * self.steps
        return x.float().clamp(-1, 1)

    def update(self, step: int) -> dict[str, float]:
        cfg, n = self.cfg, self.cfg.prompts_per_update
        captions, specs = self.prompts(step)
        cond = encode_cond(self.encoder, captions + captions)
        base = (cfg.seed * 1_000_003 + step * 2 * n) % (SEED_SPACE - 2 * n)
        x = self.sample(self.policy, cond, list(range(base, base + 2 * n)))
        scores = self.judge(to_uint8(x), specs + specs)
        keep, a_wins = preferences(scores[:n], scores[n:])
        row = {"judge_score": float(scores.mean()), "pairs": float(keep.sum())}
        if not keep.any():
            return {**row, "loss": float("nan"), "margin": float("nan"), "pair_accuracy": float("nan")}
        idx = torch.as_tensor(np.flatnonzero(keep))
        win = torch.as_tensor(np.where(a_wins[keep], np.flatnonzero(keep), np.flatnonzero(keep) + n))
        lose = torch.as_tensor(np.where(a_wins[keep], np.flatnonzero(keep) + n, np.flatnonzero(keep)))
        m = len(idx)
        x_both = torch.cat([x[win], x[lose]])
        c_both = _subset(cond, torch.cat([idx, idx]))
        t = self.grid[torch.randint(0, len(self.grid), (m,), generator=self.gen)].repeat(2)
        eps = torch.randn((m, *x.shape[1:]), generator=self.gen).repeat(2, 1, 1, 1).to(self.device)
        w = torch.full((2 * m,), self.w, device=self.device)
        err = denoising_error(self.policy, x_both, t, eps, c_both, w)
        with torch.no_grad():
            ref = denoising_error(self.reference, x_both, t, eps, c_both, w)
        loss, margin = pso_loss(err[:m], err[m:], ref[:m], ref[m:], cfg.beta)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        norm = float(torch.nn.utils.clip_grad_norm_(self.policy.parameters(), cfg.grad_clip))
        self.opt.step()
        self.evals["loss_forward"] += 4 * m
        self.evals["backward"] += 2 * m
        return {**row, "loss": float(loss.detach()), "margin": float(margin.mean()),
                "pair_accuracy": float((margin < 0).float().mean()), "grad_norm": norm}  # fmt: skip

    def pack(self, out: Path, summary: dict[str, Any]) -> Path:
        """The tuned student in the packed layout: the source's config.json with a `tuning` block."""
        out.mkdir(parents=True, exist_ok=True)
        weights = {k: v.detach().contiguous() for k, v in self.policy.state_dict().items()}
        save_file(weights, out / "model.safetensors")
        info = json.loads((self.source / PACKED_CONFIG).read_text())
        info["student"]["tuning"] = {
            "method": self.cfg.method,
            "config": self.cfg.model_dump(mode="json"),
            "source": str(self.source),
            "source_sha256": sha256_file(weights_file(self.source)[0]),
            "judge": self.cfg.judge,
            **summary,
        }
        (out / PACKED_CONFIG).write_text(json.dumps(info, indent=2))
        return out


def tune(cfg: PsoConfig, model: str | Path, out: str | Path, judge: Judge, progress: bool = True) -> dict[str, Any]:
    """Tune the packed student `model` by PSO into `out` (run files) and `out/student` (the packed
    tuned student, with sample grids before and after on the training-time sample prompts)."""
    out = Path(out)
    if (out / "student" / PACKED_CONFIG).is_file():
        raise ConfigError(f"{out} already holds a tuned student; use a new --out")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    tuner = PsoTuner(cfg, model, judge)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(cfg.model_dump_json(indent=2))
    metrics = MetricsLog(out)
    captions = sample_prompts()
    cond = encode_cond(tuner.encoder, captions)
    seeds = list(range(len(captions)))
    save_grid(out / "samples_before.png", to_uint8(tuner.sample(tuner.reference, cond, seeds)), captions, cols=8)
    rows: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for step in tqdm(range(cfg.iters), disable=not progress, desc=f"pso K={tuner.steps}"):
        rows.append(tuner.update(step))
        if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.iters:
            window = rows[-cfg.log_every :]
            agg = {k: float(np.nanmean([r.get(k, np.nan) for r in window])) for k in window[-1]}
            metrics.write({**agg, "step": step + 1})
    metrics.close()
    plot_loss(out / "metrics.jsonl", out / "loss.png", "loss", "PSO loss")
    summary = {
        "iters": cfg.iters,
        "wall_s": time.perf_counter() - t0,
        "pairs": int(sum(r["pairs"] for r in rows)),
        "network_forward_images": tuner.evals["sample_forward"] + tuner.evals["loss_forward"],
        "network_backward_images": tuner.evals["backward"],
        "evals": dict(tuner.evals),
        "device": str(tuner.device),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    student = tuner.pack(out / "student", summary)
    save_grid(student / "samples.png", to_uint8(tuner.sample(tuner.policy, cond, seeds)), captions, cols=8)
    log.info("pso: %d updates, %d preference pairs, %.0f s; tuned student in %s", cfg.iters, summary["pairs"],
             summary["wall_s"], student)  # fmt: skip
    return summary
