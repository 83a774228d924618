"""Checkpoints: safetensors weights plus a JSON state, written atomically; never pickle.

A checkpoint directory holds
    model.safetensors   the trained weights
    ema.safetensors     the EMA weights (what sampling, evaluation and export use)
    optim.safetensors   Adam's first and second moments and step per parameter (the
                        parameter-space distillation preconditions with the second moments),
                        plus the training RNG state
    state.json          format version, config, step, data position, optimizer hyperparameters
It is written to a temporary sibling and swapped in with renames, so a crash never leaves a
half-written checkpoint where a resume would read it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from distill.kit.config import TrainConfig, validate_config
from fewstep.networks import Denoiser, build_denoiser

log = logging.getLogger(__name__)
FORMAT = 1
RNG_KEY = "__rng__.torch"


@dataclass
class TrainState:
    step: int
    batch_index: int
    extra: dict[str, Any]


def _contiguous(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in sd.items()}


def optimizer_tensors(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    names = {id(p): n for n, p in model.named_parameters()}
    out: dict[str, torch.Tensor] = {}
    for p, st in opt.state.items():
        for key, val in st.items():
            out[f"{names[id(p)]}.{key}"] = val.detach().cpu().reshape(val.shape).contiguous()
    return out


def load_optimizer_tensors(
    model: torch.nn.Module, opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]
) -> None:
    for name, p in model.named_parameters():
        st = {}
        for key in ("step", "exp_avg", "exp_avg_sq"):
            if f"{name}.{key}" in tensors:
                st[key] = tensors[f"{name}.{key}"].to(p.device if key != "step" else "cpu")
        if st:
            opt.state[p] = st


def staging_dir(directory: Path) -> Path:
    """An empty temporary sibling of `directory` to write a checkpoint into (see `swap_in`)."""
    tmp = directory.with_name(directory.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def swap_in(tmp: Path, directory: Path) -> None:
    """Replace `directory` by the finished `tmp` with renames, so a crash leaves one whole checkpoint."""
    old = directory.with_name(directory.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(
    directory: str | Path,
    cfg: TrainConfig,
    state: TrainState,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    generator: torch.Generator,
) -> Path:
    directory = Path(directory)
    tmp = staging_dir(directory)
    save_file(_contiguous(model.state_dict()), tmp / "model.safetensors")
    save_file(_contiguous(ema.state_dict()), tmp / "ema.safetensors")
    tensors = optimizer_tensors(model, opt)
    tensors[RNG_KEY] = generator.get_state().cpu()
    save_file(tensors, tmp / "optim.safetensors")
    meta = {
        "format": FORMAT,
        "step": state.step,
        "batch_index": state.batch_index,
        "config": cfg.model_dump(mode="json"),
        "param_groups": [{k: v for k, v in g.items() if k != "params"} for g in opt.state_dict()["param_groups"]],
        "extra": state.extra,
    }
    (tmp / "state.json").write_text(json.dumps(meta, indent=2))
    swap_in(tmp, directory)
    return directory


def read_state(directory: str | Path) -> dict[str, Any]:
    path = Path(directory) / "state.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory} is not a checkpoint (no state.json)")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: unsupported checkpoint format {meta.get('format')!r}")
    return meta


def checkpoint_config(directory: str | Path) -> TrainConfig:
    return validate_config(read_state(directory)["config"])


def load_training_state(
    directory: str | Path,
    model: torch.nn.Module,
    ema: torch.nn.Module,
    opt: torch.optim.Optimizer,
    generator: torch.Generator,
) -> TrainState:
    directory = Path(directory)
    meta = read_state(directory)
    model.load_state_dict(load_file(directory / "model.safetensors"))
    ema.load_state_dict(load_file(directory / "ema.safetensors"))
    tensors = load_file(directory / "optim.safetensors")
    generator.set_state(tensors.pop(RNG_KEY))
    load_optimizer_tensors(model, opt, tensors)
    for group, saved in zip(opt.param_groups, meta["param_groups"], strict=True):
        group.update({k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()})
    return TrainState(meta["step"], meta["batch_index"], meta.get("extra", {}))


def resolve_checkpoint(path: str | Path) -> Path:
    """Accept a run directory (uses its checkpoint/) or a checkpoint directory."""
    path = Path(path)
    if (path / "state.json").is_file():
        return path
    if (path / "checkpoint" / "state.json").is_file():
        return path / "checkpoint"
    raise FileNotFoundError(f"no checkpoint at {path} (expected state.json or checkpoint/state.json)")


# A packed model: what gets committed (`fewstep pack`). Small, inference-ready, plus Adam's second
# moments in fp32 for the parameter-space distillation's preconditioner. (They were fp16 once: a
# small teacher's v is mostly below fp16's range, 97% of the entries became exactly 0 and the
# "preconditioner" 1 / (sqrt(v) + eps) turned into 1e8 on them. `distill.teacher.adam_v` re-estimates v
# for a packed teacher whose run is gone.)
PACKED_WEIGHTS = "model.safetensors"
PACKED_CONFIG = "config.json"
PACKED_ADAM_V = "adam_v.safetensors"


def pack_model(run: str | Path, out: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Write EMA weights, config and fp32 Adam second moments of a run's checkpoint to `out`."""
    ckpt = resolve_checkpoint(run)
    meta = read_state(ckpt)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ema = load_file(ckpt / "ema.safetensors")
    save_file(_contiguous(ema), out / PACKED_WEIGHTS)
    optim = load_file(ckpt / "optim.safetensors")
    adam_v = {k.removesuffix(".exp_avg_sq"): v.float() for k, v in optim.items() if k.endswith(".exp_avg_sq")}
    save_file(adam_v, out / PACKED_ADAM_V)
    info = {"config": meta["config"], "step": meta["step"], "source": str(ckpt), **(extra or {})}
    (out / PACKED_CONFIG).write_text(json.dumps(info, indent=2))
    return out


def load_adam_second_moments(path: str | Path) -> dict[str, torch.Tensor]:
    """Adam's exp_avg_sq per parameter name (float32), from a packed model or a checkpoint.

    A packed file in fp16 (the old `fewstep pack`) is read but warned about: most of a small
    teacher's moments underflow there; re-estimate them (`fewstep pack --estimate-adam-v`)."""
    path = Path(path)
    if (path / PACKED_ADAM_V).is_file():
        v = load_file(path / PACKED_ADAM_V)
        if any(t.dtype == torch.float16 for t in v.values()):
            flat = torch.cat([t.flatten().float() for t in v.values()])
            log.warning(
                "%s holds Adam second moments in fp16 (%.1f%% exact zeros): the preconditioner is mostly 1/eps; "
                "repack with `fewstep pack --run %s --out %s --estimate-adam-v 200`",
                path / PACKED_ADAM_V, 100 * float((flat == 0).double().mean()), path, path,
            )  # fmt: skip
        return {k: t.float() for k, t in v.items()}
    optim = load_file(resolve_checkpoint(path) / "optim.safetensors")
    return {k.removesuffix(".exp_avg_sq"): v for k, v in optim.items() if k.endswith(".exp_avg_sq")}


def weights_file(path: str | Path, weights: str = "ema") -> tuple[Path, TrainConfig]:
    """The safetensors file `load_denoiser` reads for `path` (packed model or run/checkpoint), and its config."""
    path = Path(path)
    if (path / PACKED_CONFIG).is_file() and (path / PACKED_WEIGHTS).is_file() and weights == "ema":
        return path / PACKED_WEIGHTS, validate_config(json.loads((path / PACKED_CONFIG).read_text())["config"])
    ckpt = resolve_checkpoint(path)
    return ckpt / f"{weights}.safetensors", checkpoint_config(ckpt)


def load_denoiser(
    path: str | Path, weights: str = "ema", device: str | torch.device = "cpu"
) -> tuple[Denoiser, TrainConfig]:
    """A trained denoiser and its config, from a packed model or a run/checkpoint (EMA by default)."""
    file, cfg = weights_file(path, weights)
    model = build_denoiser(cfg.model)
    model.load_state_dict(load_file(file))
    return model.to(device).eval().requires_grad_(False), cfg


def student_info(path: str | Path) -> dict[str, Any] | None:
    """The `student` block `fewstep distill` packs beside a student's weights (K, sampler, guidance
    range, training cost); None for a teacher."""
    f = Path(path) / PACKED_CONFIG
    return json.loads(f.read_text()).get("student") if f.is_file() else None
