"""Distillation configs (`fewstep distill`): typed, with presets, saved beside every checkpoint."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator

from distill.config import ConfigError, DataConfig, _deep_merge, _parse_override
from fewstep.config import StrictModel, format_validation_error

Method = Literal["mm-alt", "mm-param", "pd", "cd"]


class DistillConfig(StrictModel):
    preset: str | None = None
    method: Method = "mm-alt"
    steps: int = Field(8, ge=1, le=64, description="K: the student's sampling steps")
    iters: int = Field(1000, gt=0, description="student updates")
    batch_size: int = Field(32, gt=0, description="per process")
    lr: float = Field(1e-4, gt=0)
    aux_lr: float | None = Field(None, gt=0, description="auxiliary denoiser (mm-alt); default: lr")
    betas: tuple[float, float] = (0.0, 0.99)  # reported for moment matching: no first moment
    grad_clip: float = Field(1.0, gt=0)
    warmup: int = Field(50, ge=0, description="linear learning-rate warm-up, in student updates")
    aux_steps: int = Field(1, ge=1, description="mm-alt: auxiliary updates per student update")
    weighting: Literal["rms", "batch", "none"] = Field(
        "batch",
        description="mm: w(s) of the student surrogate (rms: per example unit direction; batch: one scale "
        "per minibatch; none)",
    )
    guidance_min: float = Field(1.0, ge=0)
    guidance_max: float = Field(5.0, ge=0)
    guidance_default: float = Field(3.0, ge=0, description="the w used for samples and the bundle default")
    ema_decay: float = Field(0.0, ge=0, lt=1, description="EMA of the student (0: off, pack the raw student)")
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
    data: DataConfig = DataConfig(seed=1, num_workers=1, cond_dropout=0.0)
    seed: int = Field(0, ge=0)
    log_every: int = Field(25, gt=0)
    ckpt_every: int = Field(100, gt=0)
    sample_every: int = Field(250, gt=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    threads: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DistillConfig:
        if not self.guidance_min <= self.guidance_default <= self.guidance_max:
            raise ValueError("need guidance_min <= guidance_default <= guidance_max")
        n, k = self.teacher_steps, self.steps
        if self.method == "pd" and (n <= k or n % k or (n // k) & (n // k - 1)):
            raise ValueError(f"pd: teacher_steps ({n}) must be steps ({k}) times a power of two >= 2")
        if self.method == "cd" and n % k:
            raise ValueError(f"cd: teacher_steps ({n}) must be a multiple of steps ({k})")
        return self


RESUMABLE = frozenset({"iters", "log_every", "ckpt_every", "sample_every", "device", "threads"})

DISTILL_PRESETS: dict[str, dict[str, Any]] = {
    # About 2 s an iteration on 2 CPU cores at batch 32 (student, auxiliary and guided teacher passes).
    "shapes32-cpu": {"iters": 1000, "batch_size": 32, "lr": 1e-4},
    # One GPU: bigger batches, same number of updates.
    "shapes32-gpu": {"iters": 2000, "batch_size": 128, "lr": 1e-4, "data": {"num_workers": 4}},
    # Tests: seconds.
    "tiny": {"iters": 4, "batch_size": 4, "log_every": 2, "ckpt_every": 2, "sample_every": 1000, "warmup": 1},
}


def load_distill_config(
    preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> DistillConfig:
    data: dict[str, Any] = {}
    if preset is not None:
        if preset not in DISTILL_PRESETS:
            raise ConfigError(f"preset: unknown preset {preset!r}; choose one of {sorted(DISTILL_PRESETS)}")
        data = _deep_merge(data, DISTILL_PRESETS[preset])
        data["preset"] = preset
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        data = _deep_merge(data, json.loads(path.read_text()))
    for item in overrides or []:
        data = _deep_merge(data, _parse_override(item))
    try:
        return DistillConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError("invalid distillation config:\n" + format_validation_error(e, "  ")) from None
