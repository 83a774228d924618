import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from distill.kit.config import ConfigError, load_config
from distill.teacher.train import train

ROOT = Path(__file__).resolve().parents[3]


def _tiny(**over):
    return load_config("tiny", overrides=[f"{k}={json.dumps(v)}" for k, v in over.items()])


def test_training_smoke_lowers_loss_and_writes_artifacts(tmp_path):
    cfg = _tiny(steps=40, log_every=10, **{"data.num_workers": 1})
    summary = train(cfg, tmp_path / "run", progress=False)
    rows = [json.loads(r) for r in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["loss"] < 0.85 * rows[0]["loss"], rows
    ckpt = tmp_path / "run" / "checkpoint"
    assert {p.name for p in ckpt.iterdir()} == {
        "model.safetensors",
        "ema.safetensors",
        "optim.safetensors",
        "state.json",
    }
    optim = load_file(ckpt / "optim.safetensors")
    assert any(k.endswith(".exp_avg_sq") for k in optim)  # Adam's second moments, for mm-param
    assert (tmp_path / "run" / "samples" / "step0000040.png").stat().st_size > 1000
    assert (tmp_path / "run" / "loss.png").is_file()
    assert summary["steps"] == 40 and summary["ranks_in_sync"]


def test_resume_reaches_identical_state(tmp_path):
    cfg = _tiny(steps=12)
    full = train(cfg, tmp_path / "full", progress=False)
    part = train(cfg, tmp_path / "part", progress=False, stop_at=5)
    assert part["steps"] == 5
    resumed = train(cfg, tmp_path / "part", progress=False)
    assert resumed["rank_weight_digests"] == full["rank_weight_digests"]
    a = load_file(tmp_path / "full" / "checkpoint" / "ema.safetensors")
    b = load_file(tmp_path / "part" / "checkpoint" / "ema.safetensors")
    assert all((a[k] == b[k]).all() for k in a)
    steps = [json.loads(r)["step"] for r in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))  # no duplicated rows after the resume


def test_resume_with_another_config_is_refused_and_keeps_the_checkpoint(tmp_path):
    train(_tiny(steps=3), tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "checkpoint" / "state.json").read_text()
    with pytest.raises(ConfigError, match=r"optim\.lr"):
        train(_tiny(steps=3, **{"optim.lr": 0.01}), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "checkpoint" / "state.json").read_text() == before


def test_folder_data_trains_and_reports_skips(tmp_path):
    from tests.distill.kit.test_data import _write_folder

    folder = _write_folder(tmp_path / "imgs", n_good=6)
    cfg = _tiny(steps=4, batch_size=4, **{"data.source": "folder", "data.path": str(folder)})
    summary = train(cfg, tmp_path / "run", progress=False)
    assert summary["steps"] == 4 and summary["skipped_images"] >= 1


def test_cli_errors_are_clear(tmp_path):
    exe = [sys.executable, "-m", "fewstep_cli"]  # the `fewstep` console script's `main`
    r = subprocess.run(
        [*exe, "train", "--preset", "tiny", "--set", "optim.lr=-1", "--out", str(tmp_path / "x")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "optim.lr" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "x").exists()  # nothing half-written
    r = subprocess.run(
        [*exe, "train", "--preset", "tiny", "--set", "data.source=folder", "--set", f"data.path={tmp_path}/none",
         "--out", str(tmp_path / "y")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "y").exists()
    r = subprocess.run(
        [*exe, "train", "--preset", "tiny", "--set", "data.source=webdataset", "--set",
         f"data.path={tmp_path}/shard-{{000..003}}.tar", "--out", str(tmp_path / "z")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert r.returncode == 2 and "shard-000.tar" in r.stderr and not (tmp_path / "z").exists()


@pytest.mark.timeout(300)
def test_torchrun_two_gloo_processes_stay_in_sync(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = Path(sys.executable).parent / "torchrun"
    out = tmp_path / "ddp"
    subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "fewstep_cli", "train", "--preset", "tiny",
         "--set", "steps=6", "--set", "threads=1", "--out", str(out), "--no-progress"],
        check=True, cwd=ROOT, env=env, capture_output=True, timeout=280,
    )  # fmt: skip
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["steps"] == 6
    assert len(summary["rank_weight_digests"]) == 2 and summary["ranks_in_sync"]


def test_pack_keeps_ema_weights_and_fp32_second_moments(tmp_path):
    """The packed Adam moments are mm-param's preconditioner 1 / (sqrt(v) + eps): stored in fp16 most
    of a small teacher's v (1e-8..1e-12) flushes to 0 and the preconditioner to 1e8. So: fp32 on disk,
    bit for bit the run's, and almost no zeros."""
    import torch

    from distill.kit.checkpoint import PACKED_ADAM_V, load_adam_second_moments, load_denoiser, pack_model
    from distill.teacher.adam_v import second_moment_stats

    train(_tiny(steps=3), tmp_path / "run", progress=False)
    packed = pack_model(tmp_path / "run", tmp_path / "packed")
    from_run, cfg_run = load_denoiser(tmp_path / "run")
    from_pack, cfg_pack = load_denoiser(packed)
    assert cfg_run == cfg_pack
    for (k, a), (_, b) in zip(from_run.state_dict().items(), from_pack.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    stored = load_file(packed / PACKED_ADAM_V)
    assert {t.dtype for t in stored.values()} == {torch.float32}
    v = load_adam_second_moments(packed)
    v_full = load_adam_second_moments(tmp_path / "run")
    assert set(v) == {n for n, _ in from_run.named_parameters()} == set(v_full)
    for k in v:
        assert torch.equal(v[k], v_full[k].float()), k  # no rounding through a narrower type
    assert second_moment_stats(v)["zero_share"] < 0.01, second_moment_stats(v)


def test_warm_start_grows_a_network_that_starts_as_the_same_function(tmp_path, tiny_bert_dir):
    import torch

    from distill.teacher.train import warm_start
    from fewstep.networks import build_denoiser
    from tests.conftest import make_packed_model

    small = make_packed_model(tmp_path / "small", tiny_bert_dir)
    over = [f"text.encoder={tiny_bert_dir}", "model.text_dim=32", "text.max_tokens=16"]
    grown_cfg = load_config("tiny", None, [*over, "model.cross_attn_resolutions=[16,8]"]).model
    grown = build_denoiser(grown_cfg).eval()
    missing = warm_start(grown, small)
    assert missing and all(".cross_attn." in k for k in missing)  # only the added attention is new
    ref = build_denoiser(load_config("tiny", None, over).model).eval()
    ref.load_state_dict(load_file(small / "model.safetensors"))
    g = torch.Generator().manual_seed(0)
    args = (torch.randn(2, 3, 16, 16, generator=g), torch.rand(2, generator=g), torch.randn(2, 16, 32, generator=g))
    mask = torch.ones(2, 16, dtype=torch.long)
    with torch.inference_mode():
        torch.testing.assert_close(grown(*args, mask), ref(*args, mask))
    wider = build_denoiser(load_config("tiny", None, [*over, "model.base_channels=32"]).model)
    with pytest.raises(ConfigError, match="other shapes"):
        warm_start(wider, small)


def test_warm_start_through_the_config(tmp_path, tiny_bert_dir):
    from tests.conftest import make_packed_model

    small = make_packed_model(tmp_path / "small", tiny_bert_dir)
    over = [f"text.encoder={tiny_bert_dir}", "model.text_dim=32", "text.max_tokens=16", "steps=2"]
    cfg = load_config("tiny", None, [*over, f"init_from={small}", "data.num_workers=0"])
    train(cfg, tmp_path / "run", progress=False)
    # one step at warmup lr moves the weights only a little from the warm start, not from random
    start = load_file(small / "model.safetensors")
    after = load_file(tmp_path / "run" / "checkpoint" / "model.safetensors")
    key = "net.conv_out.weight"
    assert (after[key] - start[key]).abs().max() < 0.05 < start[key].abs().max()
