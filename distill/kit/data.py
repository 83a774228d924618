"""Training data: the shapes world, an image folder with captions.jsonl, or WebDataset shards.

Each source is an `IterableDataset` that yields whole batches
    {"image": float32 (B, 3, R, R) in [-1, 1], "caption": list[str], "record": list[dict | None],
     "skipped": int}
so that rendering and decoding run in DataLoader worker processes and the main process only
trains. Batches are numbered: batch b of process `rank` is a pure function of (seed, rank, b), and
worker k of K yields batches start + k, start + k + K, ... which the DataLoader returns in order;
so resuming at step n replays exactly the batches an uninterrupted run would have seen (the
shapes world and image folders; WebDataset streams are not replayable and resume from a fresh
shuffle).

Unreadable images are skipped and counted in the batch's "skipped" field, never a crash; the
trainer reports the total.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

import shapesworld as shapes
from distill.kit.config import DataConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif"}


class DataError(ValueError):
    """The data source cannot be used (missing folder, empty or malformed captions file)."""


def stream_seed(seed: int, rank: int) -> int:
    """Each process draws its own stream (`issue 2`: each rank its own data seed)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> float32 (B, 3, H, W) in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float (B, 3, H, W) in [-1, 1] -> uint8 (B, H, W, 3)."""
    x = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def load_image(source: str | Path | bytes, resolution: int) -> np.ndarray:
    """Open, convert to RGB, resize the short side to `resolution` and centre-crop: (R, R, 3) uint8."""
    img = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
    img = img.convert("RGB")
    w, h = img.size
    scale = resolution / min(w, h)
    nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
    img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=3.0)
    left, top = (nw - resolution) // 2, (nh - resolution) // 2
    return np.asarray(img.crop((left, top, left + resolution, top + resolution)), dtype=np.uint8)


class _Numbered(IterableDataset):
    """Yields batches start, start+1, ... split across DataLoader workers by batch number."""

    def __init__(self, start_batch: int = 0, num_batches: int | None = None) -> None:
        self.start_batch = start_batch
        self.num_batches = num_batches

    def batch(self, b: int) -> dict[str, Any]:
        raise NotImplementedError

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        k, n_workers = (info.id, info.num_workers) if info else (0, 1)
        b = self.start_batch + k
        end = None if self.num_batches is None else self.start_batch + self.num_batches
        while end is None or b < end:
            yield self.batch(b)
            b += n_workers


class ShapesBatches(_Numbered):
    """Shapes-world batches rendered on the fly; never a held-out composition in "train" mode."""

    def __init__(
        self,
        batch_size: int,
        resolution: int,
        seed: int,
        rank: int = 0,
        mode: shapes.Mode = "train",
        start_batch: int = 0,
        num_batches: int | None = None,
        p_two: float = 1 - shapes.P_ONE_OBJECT,
    ) -> None:
        super().__init__(start_batch, num_batches)
        self.batch_size, self.resolution, self.mode, self.p_two = batch_size, resolution, mode, p_two
        self.seed = stream_seed(seed, rank)

    def batch(self, b: int) -> dict[str, Any]:
        items = [
            shapes.sample(self.seed, b * self.batch_size + i, self.mode, self.p_two) for i in range(self.batch_size)
        ]
        images = np.stack([shapes.render(it.scene, it.placements, self.resolution) for it in items])
        return {
            "image": to_tensor(images),
            "caption": [it.caption for it in items],
            "record": [it.scene.to_dict() for it in items],
            "skipped": 0,
        }


def read_captions(folder: Path) -> list[tuple[str, str]]:
    """Read `captions.jsonl` ({"file", "caption"} per line); errors name the file and line."""
    if not folder.is_dir():
        raise DataError(f"data.path: image folder {folder} does not exist")
    path = folder / "captions.jsonl"
    if not path.is_file():
        raise DataError(f"data.path: {folder} has no captions.jsonl")
    entries = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
            entries.append((str(obj["file"]), str(obj["caption"])))
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise DataError(f'{path}:{n}: expected {{"file": ..., "caption": ...}}, got {line[:80]!r} ({e})') from None
    if not entries:
        raise DataError(f"{path} is empty: no images to train on")
    return entries


class FolderBatches(_Numbered):
    """Batches from an image folder; each epoch a fresh permutation seeded by (seed, rank, epoch)."""

    def __init__(
        self,
        folder: str | Path,
        batch_size: int,
        resolution: int,
        seed: int,
        rank: int = 0,
        start_batch: int = 0,
        num_batches: int | None = None,
    ) -> None:
        super().__init__(start_batch, num_batches)
        self.folder = Path(folder)
        self.entries = read_captions(self.folder)
        self.batch_size, self.resolution = batch_size, resolution
        self.seed = stream_seed(seed, rank)

    def _index(self, i: int) -> int:
        n = len(self.entries)
        epoch, pos = divmod(i, n)
        perm = np.random.Generator(np.random.PCG64([self.seed, epoch])).permutation(n)
        return int(perm[pos])

    def batch(self, b: int) -> dict[str, Any]:
        images, captions, skipped = [], [], 0
        for i in range(b * self.batch_size, (b + 1) * self.batch_size):
            file, caption = self.entries[self._index(i)]
            try:
                images.append(load_image(self.folder / file, self.resolution))
                captions.append(caption)
            except (OSError, UnidentifiedImageError, ValueError) as e:
                skipped += 1
                log.warning("skipping unreadable image %s: %s", self.folder / file, e)
        r = self.resolution
        arr = np.stack(images) if images else np.zeros((0, r, r, 3), np.uint8)
        return {"image": to_tensor(arr), "caption": captions, "record": [None] * len(captions), "skipped": skipped}


class WebDatasetBatches(IterableDataset):
    """WebDataset tar shards (image under jpg/png/webp, caption under txt), split by node and worker.

    Decoding happens here, not in webdataset's decoders, so that a corrupt image is counted and
    skipped like in `FolderBatches`.
    """

    def __init__(self, urls: str, batch_size: int, resolution: int, seed: int) -> None:
        self.urls, self.batch_size, self.resolution, self.seed = urls, batch_size, resolution, seed

    def __iter__(self) -> Iterator[dict[str, Any]]:
        import webdataset as wds

        ds = wds.WebDataset(
            self.urls,
            nodesplitter=wds.split_by_node,
            workersplitter=wds.split_by_worker,
            shardshuffle=False,
            empty_check=False,
            handler=wds.warn_and_continue,
        )
        images, captions, skipped = [], [], 0
        for sample in ds:
            raw = next((sample[k] for k in ("jpg", "jpeg", "png", "webp") if k in sample), None)
            text = sample.get("txt")
            try:
                if raw is None or text is None:
                    raise ValueError(f"sample {sample.get('__key__')} lacks an image or a txt caption")
                images.append(load_image(raw, self.resolution))
                captions.append(text.decode() if isinstance(text, bytes) else str(text))
            except (OSError, UnidentifiedImageError, ValueError) as e:
                skipped += 1
                log.warning("skipping unreadable sample %s: %s", sample.get("__key__"), e)
            if len(images) == self.batch_size:
                yield {
                    "image": to_tensor(np.stack(images)),
                    "caption": captions,
                    "record": [None] * len(captions),
                    "skipped": skipped,
                }
                images, captions, skipped = [], [], 0
        if images or skipped:
            r = self.resolution
            arr = np.stack(images) if images else np.zeros((0, r, r, 3), np.uint8)
            yield {"image": to_tensor(arr), "caption": captions, "record": [None] * len(captions), "skipped": skipped}


def check_source(cfg: DataConfig) -> None:
    """Fail early, with a clear message, on a data source that cannot work."""
    if cfg.source == "folder":
        read_captions(Path(cfg.path or ""))
    elif cfg.source == "webdataset":
        import braceexpand

        urls = list(braceexpand.braceexpand(cfg.path or ""))
        local = [u for u in urls if "://" not in u and not u.startswith("pipe:")]
        missing = [u for u in local if not Path(u).is_file()]
        if not urls or missing:
            raise DataError(f"data.path: shard(s) not found: {', '.join(missing[:3]) or cfg.path}")


def build_dataset(
    cfg: DataConfig, batch_size: int, rank: int = 0, start_batch: int = 0, num_batches: int | None = None
) -> IterableDataset:
    if cfg.source == "shapes":
        return ShapesBatches(
            batch_size, cfg.resolution, cfg.seed, rank, "train", start_batch, num_batches, cfg.p_two_objects
        )
    if cfg.source == "folder":
        return FolderBatches(cfg.path or "", batch_size, cfg.resolution, cfg.seed, rank, start_batch, num_batches)
    return WebDatasetBatches(cfg.path or "", batch_size, cfg.resolution, cfg.seed)


def build_loader(dataset: IterableDataset, num_workers: int) -> DataLoader:
    """batch_size=None: the dataset yields whole batches; workers keep them in batch order."""
    return DataLoader(
        dataset,
        batch_size=None,
        num_workers=num_workers,
        persistent_workers=False,
        prefetch_factor=4 if num_workers else None,
        collate_fn=None,
    )


@contextmanager
def batch_stream(dataset: IterableDataset, num_workers: int) -> Iterator[Iterator[dict[str, Any]]]:
    """`iter(build_loader(dataset, num_workers))`, whose worker processes stop when the block ends.

    The training streams are endless, so their iterator never runs out (which is when torch stops
    the workers itself). Left to the garbage collector, the workers stopped whenever a collection
    reached the iterator (it sits in reference cycles): mid-way through unrelated work, and there
    each worker's join could wait out torch's 5 s status interval. In the test suite those
    collections took 20-26 s each (`tests/distill` spent 89 of its 280 s in them)."""
    it = iter(build_loader(dataset, num_workers))
    try:
        yield it
    finally:
        # The multi-process iterator has no public close; its own __del__ calls this.
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
