import io
import json
import multiprocessing

import numpy as np
import pytest
import torch
from PIL import Image

import shapesworld as shapes
from distill.kit.config import DataConfig
from distill.kit.data import (
    DataError,
    FolderBatches,
    ShapesBatches,
    WebDatasetBatches,
    batch_stream,
    build_dataset,
    build_loader,
    load_image,
    to_uint8,
)


def test_shapes_batches_deterministic_resumable_and_per_rank():
    ds = ShapesBatches(8, 16, seed=3, rank=0, num_batches=4)
    batches = list(ds)
    assert len(batches) == 4 and batches[0]["image"].shape == (8, 3, 16, 16)
    assert batches[0]["image"].min() >= -1 and batches[0]["image"].max() <= 1
    again = list(ShapesBatches(8, 16, seed=3, rank=0, start_batch=2, num_batches=2))
    torch.testing.assert_close(again[0]["image"], batches[2]["image"], rtol=0, atol=0)
    assert again[1]["caption"] == batches[3]["caption"]
    other_rank = next(iter(ShapesBatches(8, 16, seed=3, rank=1, num_batches=1)))
    assert other_rank["caption"] != batches[0]["caption"]
    for rec, cap in zip(batches[1]["record"], batches[1]["caption"], strict=True):
        assert shapes.satisfies(shapes.Scene.from_dict(rec), shapes.parse_prompt(cap))["all"]


def test_workers_preserve_batch_order():
    single = [b["caption"] for b in build_loader(ShapesBatches(4, 16, 1, num_batches=6), 0)]
    multi = [b["caption"] for b in build_loader(ShapesBatches(4, 16, 1, num_batches=6), 2)]
    assert single == multi


def test_a_stream_stops_its_workers_when_its_block_ends():
    """An endless stream never runs out (when torch would stop the workers itself); without the block
    they lived until a garbage collection reached the iterator, stalling whatever ran then."""
    before = set(multiprocessing.active_children())
    with batch_stream(ShapesBatches(4, 16, 1), 2) as it:
        assert len(next(it)["caption"]) == 4
        assert len(set(multiprocessing.active_children()) - before) == 2
    assert not set(multiprocessing.active_children()) - before
    with pytest.raises(RuntimeError), batch_stream(ShapesBatches(4, 16, 1), 1) as it:  # and when it fails
        next(it)
        raise RuntimeError("a failed update")
    assert not set(multiprocessing.active_children()) - before


def _write_folder(root, n_good=5, corrupt=("bad.png",)):
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n_good):
        Image.fromarray(np.full((40 + i, 60, 3), 30 * i, np.uint8)).save(root / f"img{i}.png")
        lines.append({"file": f"img{i}.png", "caption": f"caption {i}"})
    for name in corrupt:
        (root / name).write_bytes(b"not an image")
        lines.append({"file": name, "caption": "broken"})
    lines.append({"file": "missing.png", "caption": "gone"})
    (root / "captions.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    return root


def test_folder_source_skips_and_counts_unreadable(tmp_path):
    folder = _write_folder(tmp_path / "imgs")
    ds = FolderBatches(folder, batch_size=7, resolution=16, seed=0, num_batches=1)
    batch = next(iter(ds))
    assert batch["skipped"] == 2  # the corrupt file and the missing one
    assert batch["image"].shape == (5, 3, 16, 16) and len(batch["caption"]) == 5
    assert "broken" not in batch["caption"]


def test_load_image_resizes_and_centre_crops(tmp_path):
    img = np.zeros((20, 60, 3), np.uint8)
    img[:, 26:34] = 255  # a narrow white band in the middle third (which the crop keeps)
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    out = load_image(buf.getvalue(), 8)
    assert out.shape == (8, 8, 3)
    assert out[:, 3:5].min() > 200 and out[:, 0].max() < 60  # the band lands in the middle of the crop


@pytest.mark.parametrize(
    ("setup", "match"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "no captions.jsonl"),
        (lambda p: (p.mkdir(), (p / "captions.jsonl").write_text("\n")), "is empty"),
        (lambda p: (p.mkdir(), (p / "captions.jsonl").write_text('{"file": "a.png"}\n')), ":1:"),
    ],
)
def test_folder_errors_are_clear(tmp_path, setup, match):
    setup(tmp_path / "data")
    with pytest.raises(DataError, match=match):
        build_dataset(DataConfig(source="folder", path=str(tmp_path / "data"), resolution=16), 4)


def test_webdataset_shards_with_a_corrupt_sample(tmp_path):
    import webdataset as wds

    shard = tmp_path / "shard-000000.tar"
    with wds.TarWriter(str(shard)) as sink:
        for i in range(5):
            buf = io.BytesIO()
            Image.fromarray(np.full((24, 24, 3), 40 * i, np.uint8)).save(buf, format="PNG")
            sink.write({"__key__": f"s{i}", "png": buf.getvalue(), "txt": f"caption {i}"})
        sink.write({"__key__": "broken", "png": b"garbage", "txt": "broken"})
    batches = list(WebDatasetBatches(str(shard), batch_size=4, resolution=16, seed=0))
    assert sum(len(b["caption"]) for b in batches) == 5
    assert sum(b["skipped"] for b in batches) == 1
    assert batches[0]["caption"][:2] == ["caption 0", "caption 1"]
    np.testing.assert_array_equal(to_uint8(batches[0]["image"][1:2])[0, 0, 0], [40, 40, 40])
