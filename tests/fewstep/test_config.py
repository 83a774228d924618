"""The shared network config (fewstep.config): strict, frozen, checked, and errors one line per key."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from fewstep.config import StrictModel, UNetConfig, format_validation_error


def test_the_default_unet_config_is_valid_and_frozen():
    cfg = UNetConfig()
    with pytest.raises(ValidationError):
        cfg.resolution = 16  # type: ignore[misc]
    assert UNetConfig.model_validate(cfg.model_dump()) == cfg


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"resolution": 36}, "resolution must be a multiple of 8, got 36"),
        ({"resolution": 8, "channel_mults": (1, 2, 2, 2, 2)}, r"divisible by 2 \*\* \(len\(channel_mults\) - 1\)"),
        ({"base_channels": 30}, r"divisible by groups and heads; not \[30, 60\]"),
        ({"base_channels": 48, "heads": 5}, r"divisible by groups and heads; not \[48, 96\]"),
    ],
)
def test_impossible_architectures_are_refused_saying_why(fields, message):
    with pytest.raises(ValidationError, match=message):
        UNetConfig(**fields)


def test_unknown_keys_are_errors():
    class Toy(StrictModel):
        a: int = 1

    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        Toy(b=2)


def test_validation_errors_are_one_line_per_dotted_key():
    class Inner(StrictModel):
        steps: int

    class Outer(StrictModel):
        train: Inner
        lr: float

    with pytest.raises(ValidationError) as e:
        Outer.model_validate({"train": {"steps": "many"}, "lr": "fast", "extra": 1})
    lines = format_validation_error(e.value, prefix="  ").splitlines()
    assert len(lines) == 3
    assert lines[0].startswith("  train.steps: ") and lines[1].startswith("  lr: ") and lines[2].startswith("  extra: ")
