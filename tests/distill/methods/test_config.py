"""The distillation config: the method names spelled once, the distillation's own data defaults
under every preset, and the errors of `distill.kit.config.load` naming the key. (Which settings each
method reads is tested with the runner: tests/distill/methods/test_mm_alt.py.)"""

import typing

import pytest

from distill.kit.config import ConfigError
from distill.methods.config import (
    DISTILL_PRESETS,
    METHOD_NAMES,
    MM_ALT,
    DistillConfig,
    load_distill_config,
    validate_distill_config,
)


def test_method_names_are_the_configs_choices():
    assert typing.get_args(DistillConfig.model_fields["method"].annotation) == METHOD_NAMES
    assert validate_distill_config({}).method == MM_ALT


@pytest.mark.parametrize("preset", sorted(DISTILL_PRESETS))
def test_presets_validate_over_the_distillation_data_defaults(preset):
    cfg = load_distill_config(preset, None, ["data.resolution=16"])
    assert cfg.preset == preset and cfg.data.seed == 1 and cfg.data.cond_dropout == 0.0


@pytest.mark.parametrize(
    ("override", "key"),
    [("method=ddpm", "method"), ("steps=0", "steps"), ("data.sead=1", "data.sead"), ("lr=fast", "lr")],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=rf"invalid distillation config:\n  {key}:"):
        load_distill_config("tiny", None, [override])


def test_every_preset_trains_with_an_ema_by_default():
    from distill.methods.config import DISTILL_PRESETS

    for preset in DISTILL_PRESETS:
        assert load_distill_config(preset).ema_decay == 0.99, preset


def test_the_distillation_data_mix_is_the_default_teachers():
    import json
    from pathlib import Path

    teacher = json.loads((Path(__file__).parents[3] / "models/teacher/config.json").read_text())
    assert load_distill_config("shapes32-cpu").data.p_two_objects == teacher["config"]["data"]["p_two_objects"]


@pytest.mark.parametrize("method", ["pd", "cd"])
def test_warm_start_is_moment_matching_only(method):
    with pytest.raises(ValueError, match="warm_start is set"):
        load_distill_config("tiny", None, [f"method={method}", "steps=2", "teacher_steps=8", "warm_start=1"])


def test_warm_start_must_leave_updates_for_the_method():
    with pytest.raises(ValueError, match="warm_start"):
        load_distill_config("tiny", None, ["warm_start=4"])  # tiny: iters = 4


def test_snr_cap_counts_as_used_by_the_auxiliarys_weighting():
    cfg = load_distill_config("tiny", None, ["aux_weighting=snr-cap", "snr_cap=5"])
    assert cfg.snr_cap == 5
    with pytest.raises(ValueError, match="snr_cap is set"):
        load_distill_config("tiny", None, ["snr_cap=5"])
