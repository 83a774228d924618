"""Run infrastructure every training run shares (teacher training and every distillation method):
the process group under torchrun, the metrics log, the fixed prompts of the periodic sample grids,
a weights digest and the run's provenance (the git commit, `-dirty` when the tree had uncommitted
changes: `fewstep.provenance`, re-exported here so that runs record it the way results do).
Kept out of `distill.teacher` so that the distillation methods need not import teacher training
to log or sample.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

import shapesworld as shapes
from distill.kit.config import ConfigError
from fewstep.provenance import git_revision, provenance

__all__ = [
    "SAMPLE_SEED",
    "Dist",
    "MetricsLog",
    "git_revision",
    "provenance",
    "sample_prompts",
    "setup_distributed",
    "weights_digest",
]

log = logging.getLogger(__name__)

SAMPLE_SEED = 20241  # the fixed prompts and seeds of the periodic sample grids


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device_kind: str) -> tuple[Dist, torch.device]:
    """Initialise DDP under torchrun (env RANK/WORLD_SIZE); nccl on CUDA, gloo on CPU."""
    use_cuda = device_kind == "cuda" or (device_kind == "auto" and torch.cuda.is_available())
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: 'cuda' requested but CUDA is not available")
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:
        d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    else:
        d = Dist()
    if use_cuda:
        torch.cuda.set_device(d.local_rank)
        return d, torch.device("cuda", d.local_rank)
    return d, torch.device("cpu")


def weights_digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, p in sorted(model.state_dict().items()):
        h.update(name.encode())
        h.update(p.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def sample_prompts(n: int = 16) -> list[str]:
    return [shapes.sample(SAMPLE_SEED, i, "all").caption for i in range(n)]


class MetricsLog:
    """metrics.jsonl (always) and TensorBoard scalars (when tensorboard is installed)."""

    def __init__(self, out: Path) -> None:
        self.path = out / "metrics.jsonl"
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        except ImportError:  # optional
            log.info("tensorboard not installed; metrics go to %s only", self.path)

    def write(self, row: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        if self.tb is not None:
            for k, v in row.items():
                if k != "step" and isinstance(v, int | float):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def truncate_after(self, step: int) -> None:
        """On resume, drop rows logged after the checkpoint (they will be logged again)."""
        if self.path.exists():
            rows = [r for r in self.path.read_text().splitlines() if r and json.loads(r)["step"] <= step]
            self.path.write_text("".join(r + "\n" for r in rows))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
