"""The distillation config: the method names spelled once, the distillation's own data defaults
under every preset, and the errors of `distill.config.load` naming the key. (Which settings each
method reads is tested with the runner: tests/distill/test_distiller.py.)"""

import typing

import pytest

from distill.config import ConfigError
from distill.distill_config import DISTILL_PRESETS, METHOD_NAMES, MM_ALT, DistillConfig, load_distill_config


def test_method_names_are_the_configs_choices():
    assert typing.get_args(DistillConfig.model_fields["method"].annotation) == METHOD_NAMES
    assert DistillConfig().method == MM_ALT


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
