import json

import pytest

from distill.kit.config import PRESETS, ConfigError, config_diff, load_config


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_presets_validate(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset and cfg.model.resolution == cfg.data.resolution


def test_overrides_are_typed_and_dotted():
    cfg = load_config("tiny", overrides=["steps=7", "optim.lr=3e-4", "data.source=shapes", "model.channel_mults=[1,1]"])
    assert cfg.steps == 7 and cfg.optim.lr == 3e-4 and cfg.model.channel_mults == (1, 1)


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("optim.lrr=1", "optim.lrr"),  # unknown key
        ("steps=lots", "steps"),  # wrong type
        ("steps=0", "steps"),  # impossible value
        ("data.resolution=30", "data.resolution"),
        ("data.cond_dropout=1.5", "data.cond_dropout"),
        ("model.base_channels=30", "model"),  # not divisible by groups
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as e:
        load_config("tiny", overrides=[override])
    assert key in str(e.value)


def test_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="preset"):
        load_config("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config("tiny", file=tmp_path / "x.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_config("tiny", file=bad)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"steps": 3, "data": {"seed": 5}}))
    cfg = load_config("tiny", file=good)
    assert cfg.steps == 3 and cfg.data.seed == 5 and cfg.data.resolution == 16
    with pytest.raises(ConfigError, match=r"data\.path"):
        load_config("tiny", overrides=["data.source=folder"])
    with pytest.raises(ConfigError, match=r"model\.resolution"):
        load_config("tiny", overrides=["data.resolution=32"])


def test_config_diff_ignores_resumable_keys():
    a = load_config("tiny")
    assert config_diff(a, load_config("tiny", overrides=["steps=99", "log_every=1"])) == []
    assert config_diff(a, load_config("tiny", overrides=["optim.lr=0.5"])) == ["optim.lr"]


def test_one_loader_for_every_config_kind(tmp_path):
    """`load` is the one loader: a kind's defaults, then preset, file and overrides, each over the
    last; both the training and the distillation config load through it, with the same errors."""
    from pydantic import BaseModel, ConfigDict

    from distill.kit.config import ConfigKind, load

    class Toy(BaseModel):
        model_config = ConfigDict(extra="forbid")
        preset: str | None = None
        a: int = 0
        b: dict[str, int] = {}

    kind = ConfigKind("toy config", {"p": {"a": 1}}, Toy.model_validate, lambda: {"b": {"x": 1}})
    f = tmp_path / "toy.json"
    f.write_text(json.dumps({"a": 2, "b": {"y": 2}}))
    toy = load(kind, "p", f, ["b.z=3"])
    assert (toy.preset, toy.a, toy.b) == ("p", 2, {"x": 1, "y": 2, "z": 3})
    with pytest.raises(ConfigError, match=r"invalid toy config:\n  c: Extra inputs are not permitted"):
        load(kind, overrides=["c=1"])

    from distill.methods.config import load_distill_config

    f.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_distill_config("tiny", file=f)
    with pytest.raises(ConfigError, match=r"invalid distillation config:\n  stepz: Extra inputs"):
        load_distill_config("tiny", overrides=["stepz=3"])
