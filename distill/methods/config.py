"""Distillation configs (`fewstep distill`): typed, with presets, saved beside every checkpoint.

The method names are spelled here, once (no torch, so the command line lists them without it),
with one config type per method over a shared base (`DistillConfig`); `distill.methods.registry`
maps each name to its run class and config type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, create_model, model_validator

from distill.kit.config import ConfigError, ConfigKind, DataConfig, load
from fewstep.config import StrictModel

MM_ALT, MM_PARAM, PD, CD = "mm-alt", "mm-param", "pd", "cd"
EMD = "emd"
SHORTCUT, ADD = "shortcut", "add"
METHOD_NAMES = (MM_ALT, MM_PARAM, PD, CD, EMD, SHORTCUT, ADD)
Method = Literal[METHOD_NAMES]  # type: ignore[valid-type]
MM_METHODS = frozenset({MM_ALT, MM_PARAM})
TEACHER_P_TWO_OBJECTS = 0.7  # distill.kit.config's composing and binding teacher presets

# The settings two methods share, declared once (type, range, help) so the two configs cannot drift
# apart; each config still gives the default where it lists the field.
TeacherSteps = Annotated[
    int,
    Field(
        ge=2,
        le=1024,
        description="pd: the teacher's DDIM step count the halving starts from (K * 2^S, S >= 1 stages); "
        "cd: N, the teacher's DDIM discretisation of [0, 1] (a multiple of K: N / K teacher steps per segment)",
    ),
]
TeacherWeightCap = Annotated[
    float,
    Field(
        ge=1,
        description="cap on the x-space weight 1 + SNR(s) = 1 / sigma_s^2 of the teacher's loss (mm-param's "
        "teacher gradient G; mm-alt with aux_weighting=teacher): exact for sigma_s >= cap^-1/2",
    ),
]


class DistillConfig(StrictModel):
    """What every distillation method has: the student's K, the optimisation, guidance, EMA, data
    and bookkeeping. Each method's config subclasses it with its own settings only, so a setting a
    method does not have is a validation error by construction (pydantic's extra="forbid")."""

    preset: str | None = None
    method: Method
    steps: int = Field(8, ge=1, le=64, description="K: the student's sampling steps")
    iters: int = Field(1000, gt=0, description="student updates")
    batch_size: int = Field(32, gt=0, description="per process")
    lr: float = Field(1e-4, gt=0)
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
        if self.data.cond_dropout != 0.0:
            raise ValueError(f"data.cond_dropout is set but {self.method} never drops captions (guidance uses the "
                             "null caption; remove the setting)")  # fmt: skip
        unused = [f"{key} is set but {why}" for key, why in self.unused_options() if self._differs(key)]
        if unused:
            raise ValueError("; ".join(unused) + " (remove the setting)")
        return self

    def unused_options(self) -> list[tuple[str, str]]:
        """(key, reason) for settings of this method that the chosen options leave unused (e.g.
        snr_cap without an snr-cap weighting): set away from their default, they would silently do
        nothing, so they are errors. Settings a method does not have at all are not fields."""
        return []

    def _differs(self, key: str) -> bool:
        return getattr(self, key) != type(self).model_fields[key].default


class MomentMatchingConfig(DistillConfig):
    """mm-alt and mm-param: the student surrogate's weighting, the (s, t) draws, the warm start."""

    weighting: Literal["rms", "batch", "none", "sbin", "snr-cap"] = Field(
        "batch",
        description="mm: w(s) of the student surrogate (rms: per example unit direction; batch: one scale "
        "per minibatch; none; sbin: per s-bin running RMS normaliser; snr-cap: min(1 + SNR(s), snr_cap), "
        "then one scale per minibatch)",
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
    warm_start: int = Field(
        0,
        ge=0,
        description="mm: a guided warm start, the first N of the iters: regression updates of the student onto "
        "the guided teacher's x prediction at the drawn w on noised training images (the student starts as the "
        "unguided teacher: its w input is zero-initialised), then copied into the auxiliary (and the EMA) "
        "before moment matching begins",
    )

    @model_validator(mode="after")
    def _check_mm(self) -> MomentMatchingConfig:
        if self.warm_start >= self.iters:
            raise ValueError(f"warm_start ({self.warm_start}) must be below iters ({self.iters})")
        return self

    def _uses_snr_cap(self) -> bool:
        return self.weighting == "snr-cap"

    def unused_options(self) -> list[tuple[str, str]]:
        out = []
        if not self._uses_snr_cap():
            out.append(("snr_cap", f"{self.method} with weighting={self.weighting} does not use it "
                                   "(weighting=snr-cap or aux_weighting=snr-cap)"))  # fmt: skip
        if self.weighting != "sbin":
            out.append(("sbin_decay", f"{self.method} with weighting={self.weighting} does not use it "
                                      "(weighting=sbin only)"))  # fmt: skip
        return out


class MmAltConfig(MomentMatchingConfig):
    """mm-alt: moment matching with an auxiliary denoiser, alternating auxiliary and student updates."""

    method: Literal["mm-alt"] = MM_ALT
    aux_lr: float | None = Field(None, gt=0, description="auxiliary denoiser (mm-alt); default: lr")
    aux_steps: int = Field(1, ge=1, description="mm-alt: auxiliary updates per student update")
    aux_weighting: Literal["none", "teacher", "snr-cap"] = Field(
        "none",
        description="mm-alt: w(s) of the auxiliary regression (none: plain x-space MSE; teacher: the v-trained "
        "teacher's own loss weighting, x-space weight min(1 + SNR(s), teacher_weight_cap); snr-cap: "
        "min(1 + SNR(s), snr_cap), the student's weighting=snr-cap weight, so both networks weigh noise "
        "levels alike)",
    )
    teacher_weight_cap: TeacherWeightCap = 1000.0

    def _uses_snr_cap(self) -> bool:
        return self.weighting == "snr-cap" or self.aux_weighting == "snr-cap"

    def unused_options(self) -> list[tuple[str, str]]:
        out = super().unused_options()
        if self.aux_weighting != "teacher":
            out.append(("teacher_weight_cap", f"mm-alt with aux_weighting={self.aux_weighting} does not use it "
                                              "(aux_weighting=teacher only)"))  # fmt: skip
        return out


class MmParamConfig(MomentMatchingConfig):
    """mm-param: moment matching in parameter space, through the teacher's preconditioned gradient."""

    method: Literal["mm-param"] = MM_PARAM
    teacher_weight_cap: TeacherWeightCap = 1000.0


class EmdConfig(MmAltConfig):
    """emd: a one-step generator by distribution matching (DMD/DMD2, the practical relative of EM
    distillation; `distill.methods.emd`): mm-alt's auxiliary as the "fake score", trained on the
    generator's re-noised samples, and the generator moved along fake minus real at K = 1."""

    method: Literal["emd"] = EMD  # type: ignore[assignment]
    steps: int = Field(1, ge=1, le=1, description="K: emd trains a one-step generator (K = 1 only)")
    weighting: Literal["dmd", "batch", "none", "snr-cap"] = Field(  # type: ignore[assignment]
        "dmd",
        description="emd: w of the generator's direction (dmd: DMD's per-example 1 / mean |x_hat_theta - x_tilde|; "
        "batch, none, snr-cap: as mm-alt)",
    )
    aux_steps: int = Field(5, ge=1, description="emd: fake-score updates per generator update (DMD2's two "
                                                "time-scale rule: 5)")  # fmt: skip
    fake_anchor: float = Field(
        0.0,
        ge=0,
        description="emd: weight of the teacher-anchor term in the fake score's loss (0: DMD's plain denoising "
        "of generator samples; 1: mm-alt's auxiliary loss)",
    )

    def unused_options(self) -> list[tuple[str, str]]:
        out = super().unused_options()
        out.append(("time_sampling", "emd draws t = 1 and s ~ U(0, 1) whatever it says"))
        out.append(("warm_start", "emd has no guided warm start (its generator input is pure noise)"))
        return out


class PdConfig(DistillConfig):
    """pd: progressive distillation, halving the teacher's DDIM steps down to K."""

    method: Literal["pd"] = PD
    teacher_steps: TeacherSteps = 64

    @model_validator(mode="after")
    def _check_pd(self) -> PdConfig:
        n, k = self.teacher_steps, self.steps
        if n <= k or n % k or (n // k) & (n // k - 1):
            raise ValueError(f"pd: teacher_steps ({n}) must be steps ({k}) times a power of two >= 2")
        return self


class CdConfig(DistillConfig):
    """cd: multistep consistency distillation on the teacher's DDIM grid."""

    method: Literal["cd"] = CD
    teacher_steps: TeacherSteps = 64
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

    @model_validator(mode="after")
    def _check_cd(self) -> CdConfig:
        if self.teacher_steps % self.steps:
            raise ValueError(f"cd: teacher_steps ({self.teacher_steps}) must be a multiple of steps ({self.steps})")
        return self


class ShortcutConfig(DistillConfig):
    """shortcut: one student for every power-of-two K up to `steps` (Frans et al. 2024), trained by
    self-consistency of its own steps (distill.methods.shortcut)."""

    method: Literal["shortcut"] = SHORTCUT
    steps: int = Field(8, ge=2, le=64, description="shortcut: the finest K (a power of two); the bundle serves "
                                                   "every power of two up to it")  # fmt: skip
    base_fraction: float | None = Field(
        None,
        gt=0,
        lt=1,
        description="shortcut: share of each batch trained at the finest step size on the guided teacher's "
        "x (the rest: self-consistency at the coarser sizes, drawn uniformly); None: every step size alike",
    )

    @model_validator(mode="after")
    def _check_shortcut(self) -> ShortcutConfig:
        if self.steps & (self.steps - 1):
            raise ValueError(f"shortcut: steps ({self.steps}) must be a power of two (the finest K)")
        return self


class AddConfig(DistillConfig):
    """add: adversarial diffusion distillation (Sauer et al. 2023) at K = 1-4: a distillation loss toward
    the guided teacher plus a hinge loss from heads on the frozen teacher's features (distill.methods.adversarial)."""

    method: Literal["add"] = ADD
    steps: int = Field(1, ge=1, le=4, description="add: K, the student's steps (1 to 4)")
    distill_weight: float = Field(1.0, ge=0, description="add: weight of the distillation loss")
    adv_weight: float = Field(
        0.1, ge=0, description="add: weight of the adversarial (generator hinge) loss after its warm-up"
    )
    adv_warmup: int = Field(
        100, ge=0, description="add: student updates over which the adversarial weight ramps linearly from 0"
    )
    disc_lr: float = Field(1e-4, gt=0, description="add: the discriminator heads' Adam learning rate")
    r1_weight: float = Field(
        1e-2, ge=0, description="add: R1 penalty gamma / 2 |grad_f D(f_real)|^2 on the heads' real-image inputs"
    )
    disc_t_min: float = Field(0.05, gt=0, lt=1, description="add: lowest noise level t of the teacher features")
    disc_t_max: float = Field(0.5, gt=0, lt=1, description="add: highest noise level t of the teacher features")
    disc_channels: int = Field(64, ge=8, description="add: hidden channels of each discriminator head")

    @model_validator(mode="after")
    def _check_add(self) -> AddConfig:
        if self.disc_t_min > self.disc_t_max:
            raise ValueError(f"add: disc_t_min ({self.disc_t_min}) must not exceed disc_t_max ({self.disc_t_max})")
        return self


METHOD_CONFIGS: dict[str, type[DistillConfig]] = {
    MM_ALT: MmAltConfig,
    MM_PARAM: MmParamConfig,
    PD: PdConfig,
    CD: CdConfig,
    EMD: EmdConfig,
    SHORTCUT: ShortcutConfig,
    ADD: AddConfig,
}
_METHOD = create_model("_Method", __config__=ConfigDict(extra="ignore"), method=(Method, MM_ALT))


def validate_distill_config(data: dict[str, Any]) -> DistillConfig:
    """The config of `data["method"]` (mm-alt when absent), validated by that method's own type.

    A key that this method's type lacks is refused naming the key, the method and the methods
    that do have it; other errors are pydantic's, by key (`distill.kit.config.load` formats them)."""
    method = _METHOD.model_validate(data).method  # an unknown method: "method: Input should be ..."
    cls = METHOD_CONFIGS[method]
    others = {k for c in METHOD_CONFIGS.values() for k in c.model_fields}
    foreign = [k for k in data if k not in cls.model_fields and k in others]  # unknown keys: pydantic's error
    if foreign:
        lines = []
        for key in foreign:
            owners = ", ".join(m for m, c in METHOD_CONFIGS.items() if key in c.model_fields)
            lines.append(f"  {key} is set but {method} has no such setting (a setting of {owners} only; remove it)")
        raise ConfigError("invalid distillation config:\n" + "\n".join(lines))
    return cls.model_validate({**data, "method": method})


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
    return {"method": MM_ALT, "data": DistillConfig.model_fields["data"].default.model_dump(mode="json")}


DISTILL = ConfigKind("distillation config", DISTILL_PRESETS, validate_distill_config, _defaults)


def load_distill_config(
    preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> DistillConfig:
    """`distill.kit.config.load` of a `DistillConfig`: preset, then JSON file, then `key=value` overrides."""
    return load(DISTILL, preset, file, overrides)
