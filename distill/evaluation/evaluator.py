"""The shapes evaluator: a CNN that reads the scene record back from an image.

Trained once on rendered scenes only (never on generated images) and then frozen, it predicts
the background and, for each of the 9 cells, empty or (colour, shape, size)
(`docs/shapes-world.md`, "Evaluation"). Its penultimate features are the feature space
of FD, KID and precision/recall: an Inception network does not fit 32x32 synthetic scenes, a
network trained on this domain does.

It trains on all colour-shape pairs, held-out ones included: "held out" constrains the generator's
training data, while the evaluator must recognise every composition to score it.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm import tqdm

import shapesworld as shapes
from distill.kit.data import ShapesBatches, build_loader
from fewstep.config import StrictModel

log = logging.getLogger(__name__)

COLOUR_NAMES = list(shapes.COLOURS)
BACKGROUND_NAMES = list(shapes.BACKGROUNDS)
SIZE_NAMES = list(shapes.SIZES)
EMPTY = 0  # cell class 0 is "empty"; 1 + colour index otherwise


class EvaluatorConfig(StrictModel):
    resolution: int = Field(32, ge=8)
    width: int = Field(32, ge=8)
    feature_dim: int = Field(256, ge=16)
    steps: int = Field(3000, gt=0)
    batch_size: int = Field(128, gt=0)
    lr: float = Field(2e-3, gt=0)
    seed: int = Field(0, ge=0)
    test_images: int = Field(5000, gt=0)
    noise_augment: float = Field(0.03, ge=0, description="max std of Gaussian noise added in training")


class Evaluator(nn.Module):
    """Conv trunk at full, half and quarter resolution, then an MLP to a feature vector and heads."""

    def __init__(self, cfg: EvaluatorConfig) -> None:
        super().__init__()
        self.cfg = cfg
        w = cfg.width

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
                nn.Conv2d(cout, cout, 3, padding=1), nn.GroupNorm(8, cout), nn.SiLU(),
            )  # fmt: skip

        self.trunk = nn.Sequential(block(3, w), nn.MaxPool2d(2), block(w, 2 * w), nn.MaxPool2d(2), block(2 * w, 4 * w))
        side = cfg.resolution // 4
        self.reduce = nn.Conv2d(4 * w, 32, 1)
        self.features_mlp = nn.Sequential(nn.Flatten(), nn.Linear(32 * side * side, cfg.feature_dim), nn.SiLU())
        self.background = nn.Linear(cfg.feature_dim, len(BACKGROUND_NAMES))
        self.cell_colour = nn.Linear(cfg.feature_dim, 9 * (1 + len(COLOUR_NAMES)))
        self.cell_shape = nn.Linear(cfg.feature_dim, 9 * len(shapes.SHAPES))
        self.cell_size = nn.Linear(cfg.feature_dim, 9 * len(SIZE_NAMES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, R, R) in [-1, 1] -> (B, feature_dim): the FD / KID / precision-recall features."""
        return self.features_mlp(F.silu(self.reduce(self.trunk(x))))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.features(x)
        b = x.shape[0]
        return {
            "features": f,
            "background": self.background(f),
            "colour": self.cell_colour(f).view(b, 9, -1),
            "shape": self.cell_shape(f).view(b, 9, -1),
            "size": self.cell_size(f).view(b, 9, -1),
        }


def record_targets(records: list[dict]) -> dict[str, torch.Tensor]:
    """Scene records -> class targets: background (B,), colour/shape/size per cell (B, 9)."""
    b = len(records)
    bg = torch.tensor([BACKGROUND_NAMES.index(r["background"]) for r in records])
    colour = torch.zeros(b, 9, dtype=torch.long)
    shape = torch.zeros(b, 9, dtype=torch.long)
    size = torch.zeros(b, 9, dtype=torch.long)
    for i, r in enumerate(records):
        for o in r["objects"]:
            colour[i, o["cell"]] = 1 + COLOUR_NAMES.index(o["colour"])
            shape[i, o["cell"]] = shapes.SHAPES.index(o["shape"])
            size[i, o["cell"]] = SIZE_NAMES.index(o["size"])
    return {"background": bg, "colour": colour, "shape": shape, "size": size}


def loss_fn(out: dict[str, torch.Tensor], tgt: dict[str, torch.Tensor]) -> torch.Tensor:
    occupied = tgt["colour"] != EMPTY
    loss = F.cross_entropy(out["background"], tgt["background"])
    loss = loss + F.cross_entropy(out["colour"].flatten(0, 1), tgt["colour"].flatten())
    if occupied.any():
        loss = loss + F.cross_entropy(out["shape"][occupied], tgt["shape"][occupied])
        loss = loss + F.cross_entropy(out["size"][occupied], tgt["size"][occupied])
    return loss


def decode(out: dict[str, torch.Tensor]) -> list[shapes.Scene]:
    """Network outputs -> predicted scene records (any number of objects, 0 to 9)."""
    bg = out["background"].argmax(-1).tolist()
    colour = out["colour"].argmax(-1).tolist()
    shape = out["shape"].argmax(-1).tolist()
    size = out["size"].argmax(-1).tolist()
    scenes = []
    for i in range(len(bg)):
        objs = tuple(
            shapes.ShapeObject(COLOUR_NAMES[colour[i][c] - 1], shapes.SHAPES[shape[i][c]], SIZE_NAMES[size[i][c]], c)
            for c in range(9)
            if colour[i][c] != EMPTY
        )
        scenes.append(shapes.Scene(BACKGROUND_NAMES[bg[i]], objs))
    return scenes


def attribute_accuracy(pred: list[shapes.Scene], truth: list[shapes.Scene]) -> dict[str, float]:
    """Per-attribute accuracy: background; occupancy per cell; colour, shape, size per true object."""
    n_bg = n_occ = n_obj = 0
    ok = dict.fromkeys(("background", "occupancy", "colour", "shape", "size", "scene"), 0)
    for p, t in zip(pred, truth, strict=True):
        n_bg += 1
        ok["background"] += p.background == t.background
        pc = {o.cell: o for o in p.objects}
        tc = {o.cell: o for o in t.objects}
        for c in range(9):
            n_occ += 1
            ok["occupancy"] += (c in pc) == (c in tc)
        for c, o in tc.items():
            n_obj += 1
            q = pc.get(c)
            ok["colour"] += q is not None and q.colour == o.colour
            ok["shape"] += q is not None and q.shape == o.shape
            ok["size"] += q is not None and q.size == o.size
        ok["scene"] += p.background == t.background and pc == tc
    denom = {"background": n_bg, "occupancy": n_occ, "colour": n_obj, "shape": n_obj, "size": n_obj, "scene": n_bg}
    return {k: ok[k] / max(1, denom[k]) for k in ok}


TEST_SEED_OFFSET = 1_000_003  # held-out renders use another stream than training


def train_evaluator(cfg: EvaluatorConfig, out: str | Path, progress: bool = True) -> dict[str, Any]:
    """Train from `cfg.seed`, measure accuracy on held-out renders, write weights + manifest."""
    out = Path(out)
    torch.manual_seed(cfg.seed)
    model = Evaluator(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps, pct_start=0.1)
    gen = torch.Generator().manual_seed(cfg.seed)
    data = build_loader(
        ShapesBatches(cfg.batch_size, cfg.resolution, cfg.seed, mode="all", num_batches=cfg.steps), num_workers=1
    )
    t0 = time.perf_counter()
    model.train()
    bar = tqdm(data, total=cfg.steps, disable=not progress, desc="evaluator")
    for batch in bar:
        x = batch["image"]
        std = torch.rand(x.shape[0], 1, 1, 1, generator=gen) * cfg.noise_augment
        x = x + std * torch.randn(x.shape, generator=gen)
        loss = loss_fn(model(x), record_targets(batch["record"]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    train_s = time.perf_counter() - t0
    model.eval()
    acc = test_accuracy(model, cfg)
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, out / "weights.safetensors")
    manifest = {
        "config": cfg.model_dump(mode="json"),
        "seed": cfg.seed,
        "test_images": cfg.test_images,
        "accuracy": acc,
        "train_seconds": round(train_s, 1),
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2))
    log.info("evaluator accuracy on %d held-out renders: %s", cfg.test_images, acc)
    return manifest


@torch.inference_mode()
def test_accuracy(model: Evaluator, cfg: EvaluatorConfig) -> dict[str, float]:
    """Accuracy per attribute on fresh renders from another seed stream (all compositions)."""
    bs = 250
    ds = ShapesBatches(bs, cfg.resolution, cfg.seed + TEST_SEED_OFFSET, mode="all", num_batches=cfg.test_images // bs)
    preds, truth = [], []
    for batch in ds:
        preds += decode(model(batch["image"]))
        truth += [shapes.Scene.from_dict(r) for r in batch["record"]]
    return attribute_accuracy(preds, truth)


def load_evaluator(path: str | Path) -> tuple[Evaluator, dict[str, Any]]:
    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise FileNotFoundError(f"no evaluator at {path} (run `fewstep eval train-evaluator`)")
    manifest = json.loads((path / "manifest.json").read_text())
    model = Evaluator(EvaluatorConfig.model_validate(manifest["config"]))
    model.load_state_dict(load_file(path / "weights.safetensors"))
    return model.eval().requires_grad_(False), manifest


@torch.inference_mode()
def predict(model: Evaluator, images: np.ndarray, batch_size: int = 500) -> tuple[list[shapes.Scene], np.ndarray]:
    """uint8 (N, R, R, 3) images -> predicted scenes and (N, feature_dim) float64 features."""
    from distill.kit.data import to_tensor

    scenes: list[shapes.Scene] = []
    feats = []
    for i in range(0, len(images), batch_size):
        out = model(to_tensor(images[i : i + batch_size]))
        scenes += decode(out)
        feats.append(out["features"].double().numpy())
    return scenes, np.concatenate(feats) if feats else np.zeros((0, model.cfg.feature_dim))
