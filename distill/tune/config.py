"""Preference-tuning configs (`fewstep tune`): typed, with presets, saved beside the tuned student."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from distill.kit.config import ConfigKind, load
from fewstep.config import StrictModel

PSO = "pso"
TUNE_METHODS = (PSO,)

# The evaluation's prompts come from shapes-world stream 31337 (`distill.evaluation.eval_set.EVAL_SEED`);
# tuning draws its prompts from another stream so that it never sees the prompts it is scored on.
TUNE_PROMPT_SEED = 4242


class PsoConfig(StrictModel):
    """PSO (Miao et al. 2024): pairs of the student's own samples for one prompt, the judge's
    preferred one raised against the other, relative to a frozen reference copy."""

    preset: str | None = None
    method: Literal["pso"] = PSO
    iters: int = Field(100, gt=0, description="preference updates")
    prompts_per_update: int = Field(16, gt=0, description="prompts drawn per update; two samples each")
    lr: float = Field(5e-6, gt=0, description="Adam learning rate (small: tuning, not distillation)")
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0)
    beta: float = Field(
        1000.0,
        gt=0,
        description="DPO temperature on the x-space denoising-error margin (errors are means per element of "
        "images in [-1, 1], so margins are small and beta large, as in Diffusion-DPO)",
    )
    guidance: float | None = Field(None, ge=0, description="w of the samples and the loss (default: the student's own)")
    p_two_objects: float = Field(0.7, ge=0, le=1, description="share of two-object prompts (the teacher's mix)")
    prompt_seed: int = Field(TUNE_PROMPT_SEED, ge=0, description="shapes-world stream of the tuning prompts")
    seed: int = Field(0, ge=0, description="image seeds and noise of the loss")
    log_every: int = Field(5, gt=0)
    threads: int | None = Field(None, ge=1)
    judge: Literal["evaluator"] = Field(
        "evaluator",
        description="who prefers: the learned evaluator's adherence (figures are then reported with the second, "
        "independent judge as well: fewstep eval --analytic)",
    )


PSO_PRESETS: dict[str, dict[str, Any]] = {
    # About 25 s an update on 2 CPU cores for an 8-step student (32 samples of 8 steps, 4 loss passes).
    "shapes32-cpu": {"iters": 100, "prompts_per_update": 16},
    "shapes32-gpu": {"iters": 400, "prompts_per_update": 64},
    "tiny": {"iters": 3, "prompts_per_update": 4, "log_every": 1},
}
PSO_KIND = ConfigKind("tuning config", PSO_PRESETS, PsoConfig.model_validate)


def load_pso_config(
    preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> PsoConfig:
    """`distill.kit.config.load` of a `PsoConfig`: preset, then JSON file, then `key=value` overrides."""
    return load(PSO_KIND, preset, file, overrides)
