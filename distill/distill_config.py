"""Distillation configs (`fewstep distill`): typed, with presets, saved beside every checkpoint.

The method names are spelled here, once (no torch, so the command line lists them without it);
`distill.methods` maps each to its run class.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from distill.config import ConfigKind, DataConfig, load
from fewstep.config import StrictModel

MM_ALT, MM_PARAM, PD, CD = "mm-alt", "mm-param", "pd", "cd"
METHOD_NAMES = (MM_ALT, MM_PARAM, PD, CD)
Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]
MM_METHODS = frozenset({MM_ALT, MM_PARAM})
TEACHER_P_TWO_OBJECTS = 0.7  # distill.config's composing and binding teacher presets


class DistillConfig(StrictModel):
    preset: str | None = None
    method: Method = MM_ALT
    steps: int = Field(8, ge=1, le=64, description="K: the student's sampling steps")
    iters: int = Field(1000, gt=0, description="student updates")
    batch_size: int = Field(32, gt=0, description="per process")
    lr: float = Field(1e-4, gt=0)
    aux_lr: float | None = Field(None, gt=0, description="auxiliary denoiser (mm-alt); default: lr")
    betas: tuple[float, float] = (0.0, 0.99)  # reported for moment matching: no first moment
    grad_clip: float = Field(1.0, gt=0)
    warmup: int = Field(50, ge=0, description="linear learning-rate warm-up, in student updates")
    min_lr_ratio: float = Field(
        0.0,
        ge=0,
        le=1,
        description="floor of the cosine decay that follows the warm-up, as a share of lr (every method: "
        "over the whole run for mm-alt, mm-param and cd, over each stage for pd)",
    )
    aux_steps: int = Field(1, ge=1, description="mm-alt: auxiliary updates per student update")
    weighting: Literal["rms", "batch", "none", "sbin", "snr-cap"] = Field(
        "batch",
        description="mm: w(s) of the student surrogate (rms: per example unit direction; batch: one scale "
        "per minibatch; none; sbin: per s-bin running RMS normaliser; snr-cap: min(1 + SNR(s), snr_cap), "
        "then one scale per minibatch)",
    )
    aux_weighting: Literal["none", "teacher", "snr-cap"] = Field(
        "none",
        description="mm-alt: w(s) of the auxiliary regression (none: plain x-space MSE; teacher: the v-trained "
        "teacher's own loss weighting, x-space weight min(1 + SNR(s), teacher_weight_cap); snr-cap: "
        "min(1 + SNR(s), snr_cap), the student's weighting=snr-cap weight, so both networks weigh noise "
        "levels alike)",
    )
    warm_start: int = Field(
        0,
        ge=0,
        description="mm: a guided warm start, the first N of the iters: regression updates of the student onto "
        "the guided teacher's x prediction at the drawn w on noised training images (the student starts as the "
        "unguided teacher: its w input is zero-initialised), then copied into the auxiliary (and the EMA) "
        "before moment matching begins",
    )
    teacher_weight_cap: float = Field(
        1000.0,
        ge=1,
        description="cap on the x-space weight 1 + SNR(s) = 1 / sigma_s^2 of the teacher's loss (mm-param's "
        "teacher gradient G; mm-alt with aux_weighting=teacher): exact for sigma_s >= cap^-1/2",
    )
    snr_cap: float = Field(10.0, ge=1, description="weighting=snr-cap: the cap on 1 + SNR(s)")
    s_bins: int = Field(
        10, ge=1, le=100, description="mm: s-bins of the sbin normaliser and of the per-bin signal in metrics.jsonl"
    )
    sbin_decay: float = Field(
        0.99, ge=0, lt=1, description="weighting=sbin: EMA decay of each s-bin's mean square direction"
    )
    time_sampling: Literal["uniform", "grid"] = Field(
        "uniform",
        description="mm: (s, t) draws; uniform: s ~ U(0, 1), t = min(1, s + U(0, 1/K)); grid: t ~ U{1/K, ..., 1} "
        "(the sampler's own grid), s ~ U[t - 1/K, t)",
    )
    guidance_min: float = Field(1.0, ge=0)
    guidance_max: float = Field(5.0, ge=0)
    guidance_default: float = Field(3.0, ge=0, description="the w used for samples and the bundle default")
    ema_decay: float = Field(
        0.99,
        ge=0,
        lt=1,
        description="EMA of the student, every method (0: off; else student/ is the EMA and "
        "student-raw/ the raw weights). On by default: every table and shipped student used 0.99",
    )
    teacher_steps: int = Field(
        64,
        ge=2,
        le=1024,
        description="pd: the teacher's DDIM step count the halving starts from (K * 2^S, S >= 1 stages); "
        "cd: N, the teacher's DDIM discretisation of [0, 1] (a multiple of K: N / K teacher steps per segment)",
    )
    cd_target_ema: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="cd: decay mu of the target network theta^- (0: the stop-gradient current student)",
    )
    cd_weighting: Literal["boundary", "x"] = Field(
        "boundary",
        description="cd: 'boundary' = squared distance of the DDIM jumps to the segment boundary "
        "(x error times (alpha_b - sigma_b alpha_t / sigma_t)^2); 'x' = unweighted x error",
    )
    # The default teacher's own mix (shapes32-compose and shapes32-bind: p_two_objects = 0.7); the
    # evaluation's in-distribution part has 0.75. Distilling on fewer two-object scenes than the
    # teacher learnt binding from starves the student of the prompts it is judged on most.
    data: DataConfig = DataConfig(seed=1, num_workers=1, cond_dropout=0.0, p_two_objects=TEACHER_P_TWO_OBJECTS)
    seed: int = Field(0, ge=0)
    log_every: int = Field(25, gt=0)
    ckpt_every: int = Field(100, gt=0)
    sample_every: int = Field(250, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(
        True,
        description="bf16 autocast of the network forward passes on CUDA (ignored on CPU; mm-param's teacher "
        "gradient and jvp stay fp32)",
    )
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if not self.guidance_min <= self.guidance_default <= self.guidance_max:
            raise ValueError("need guidance_min <= guidance_default <= guidance_max")
        n, k = self.teacher_steps, self.steps
        if self.method == PD and (n <= k or n % k or (n // k) & (n // k - 1)):
            raise ValueError(f"pd: teacher_steps ({n}) must be steps ({k}) times a power of two >= 2")
        if self.method == CD and n % k:
            raise ValueError(f"cd: teacher_steps ({n}) must be a multiple of steps ({k})")
        if self.warm_start >= self.iters:
            raise ValueError(f"warm_start ({self.warm_start}) must be below iters ({self.iters})")
        ignored = self.ignored_keys()
        if ignored:
            raise ValueError("; ".join(f"{key} is set but {why}" for key, why in ignored) + " (remove the setting)")
        return self

    def ignored_keys(self) -> list[tuple[str, str]]:
        """(key, reason) for every setting that differs from its default but that this method (or the
        chosen option) does not use: such a setting would silently do nothing, so it is an error."""
        m = self.method
        uses: dict[str, tuple[bool, str]] = {
            "aux_lr": (m == MM_ALT, f"{m} has no auxiliary network (mm-alt only)"),
            "aux_steps": (m == MM_ALT, f"{m} has no auxiliary network (mm-alt only)"),
            "aux_weighting": (m == MM_ALT, f"{m} has no auxiliary network (mm-alt only)"),
            "warm_start": (m in MM_METHODS, f"{m} starts from the teacher by its own rule (mm-alt, mm-param only)"),
            "weighting": (m in MM_METHODS, f"{m} has no moment-matching surrogate (mm-alt, mm-param only)"),
            "s_bins": (m in MM_METHODS, f"{m} does not use s-bins (mm-alt, mm-param only)"),
            "time_sampling": (m in MM_METHODS, f"{m} draws its times on its own grid (mm-alt, mm-param only)"),
            "teacher_weight_cap": (
                m == MM_PARAM or (m == MM_ALT and self.aux_weighting == "teacher"),
                f"{m} does not use the teacher's loss weighting (mm-param, or mm-alt with aux_weighting=teacher)",
            ),
            "snr_cap": (
                m in MM_METHODS and (self.weighting == "snr-cap" or self.aux_weighting == "snr-cap"),
                f"{m} with weighting={self.weighting} does not use it (weighting=snr-cap or aux_weighting=snr-cap)",
            ),
            "sbin_decay": (
                m in MM_METHODS and self.weighting == "sbin",
                f"{m} with weighting={self.weighting} does not use it (weighting=sbin only)",
            ),
            "teacher_steps": (m in (PD, CD), f"{m} has no teacher step grid (pd, cd only)"),
            "cd_target_ema": (m == CD, f"{m} has no target network (cd only)"),
            "cd_weighting": (m == CD, f"{m} is not consistency distillation (cd only)"),
        }
        fields = type(self).model_fields
        out = [
            (key, why) for key, (used, why) in uses.items() if not used and getattr(self, key) != fields[key].default
        ]
        if self.data.cond_dropout != 0.0:
            out.append(("data.cond_dropout", f"{m} never drops captions (guidance uses the null caption)"))
        return out


RESUMABLE = frozenset({"iters", "log_every", "ckpt_every", "sample_every", "device", "threads"})

DISTILL_PRESETS: dict[str, dict[str, Any]] = {
    # About 2 s an iteration on 2 CPU cores at batch 32 (student, auxiliary and guided teacher passes).
    "shapes32-cpu": {"iters": 1000, "batch_size": 32, "lr": 1e-4},
    # One GPU: bigger batches, same number of updates.
    "shapes32-gpu": {"iters": 2000, "batch_size": 128, "lr": 1e-4, "data": {"num_workers": 4}},
    # Tests: seconds.
    "tiny": {"iters": 4, "batch_size": 4, "log_every": 2, "ckpt_every": 2, "sample_every": 1000, "warmup": 1},
}


def _defaults() -> dict[str, Any]:
    # Nested overrides (`data.resolution=16`, a preset's `data`) merge over the distillation's own
    # data defaults (stream seed 1, no condition dropout), not over DataConfig's training defaults.
    return {"data": DistillConfig.model_fields["data"].default.model_dump(mode="json")}


DISTILL = ConfigKind("distillation config", DISTILL_PRESETS, DistillConfig.model_validate, _defaults)


def load_distill_config(
    preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> DistillConfig:
    """`distill.config.load` of a `DistillConfig`: preset, then JSON file, then `key=value` overrides."""
    return load(DISTILL, preset, file, overrides)
