"""Typed configs shared by both sides (no torch): the network architecture.

Configs are pydantic models that forbid unknown keys, so a typo in a config file or an override
is an error naming the key instead of a silently ignored setting.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class UNetConfig(StrictModel):
    """A pixel-space text-conditioned UNet (`fewstep.networks.UNet`)."""

    resolution: int = Field(32, ge=8, description="image side in pixels; a multiple of 8")
    in_channels: int = Field(3, ge=1)
    base_channels: int = Field(48, ge=8)
    channel_mults: tuple[int, ...] = Field((1, 2, 2), min_length=1)
    num_res_blocks: int = Field(2, ge=1)
    cross_attn_resolutions: tuple[int, ...] = (16, 8)
    self_attn_resolutions: tuple[int, ...] = (8,)
    heads: int = Field(4, ge=1)
    groups: int = Field(8, ge=1, description="GroupNorm groups; must divide every width")
    text_dim: int = Field(384, ge=1, description="hidden size of the text encoder's token states")
    guidance_input: bool = Field(False, description="take the guidance scale w as an input (students)")
    step_size_input: bool = Field(
        False, description="take the sampler's step size d = 1/K as an input (shortcut students, Frans et al. 2024)"
    )
    prediction: Literal["v", "x", "eps"] = "v"

    @model_validator(mode="after")
    def _check(self) -> UNetConfig:
        if self.resolution % 8:
            raise ValueError(f"resolution must be a multiple of 8, got {self.resolution}")
        if self.resolution % (2 ** (len(self.channel_mults) - 1)):
            raise ValueError("resolution must be divisible by 2 ** (len(channel_mults) - 1)")
        widths = {self.base_channels * m for m in self.channel_mults}
        bad = [c for c in widths if c % self.groups or c % self.heads]
        if bad:
            raise ValueError(f"every width must be divisible by groups and heads; not {sorted(bad)}")
        return self


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the dotted key: 'train.steps: Input should be > 0'."""
    lines = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "(root)"
        lines.append(f"{prefix}{key}: {e['msg']}")
    return "\n".join(lines)
