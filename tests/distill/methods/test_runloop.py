"""The shared run: a checkpoint restores every network, optimiser state, the RNG, the counters and
the method's state, refuses another method's checkpoint, and is replaced atomically."""

from __future__ import annotations

import itertools

import pytest
import torch

from distill.kit.config import ConfigError
from distill.methods.config import load_distill_config
from distill.methods.runloop import RunBase


class ToyRun(RunBase):
    """Two linear "networks": the trained student and an untrained extra (like an EMA)."""

    format = "toy-run-1"

    def __init__(self, seed: int) -> None:
        torch.manual_seed(seed)
        self.cfg = load_distill_config("tiny", overrides=["method=pd"])
        self.student = torch.nn.Linear(3, 2)  # type: ignore[assignment]
        self.extra = torch.nn.Linear(3, 2)
        self.opt = torch.optim.Adam(self.student.parameters(), lr=0.1)
        self.gen = torch.Generator().manual_seed(seed)
        self.evals = {"forward": 0, "backward": 0}
        self.stage = 0

    def networks(self):
        return {"student": (self.student, self.opt), "extra": (self.extra, None)}

    def state(self):
        return {"stage": self.stage}

    def set_state(self, state):
        self.stage = state["stage"]

    def train_step(self) -> None:
        loss = self.student(torch.randn(4, 3, generator=self.gen)).pow(2).mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        self.evals["forward"] += 4


def test_a_checkpoint_restores_networks_optimiser_rng_counters_and_state(tmp_path):
    a = ToyRun(seed=0)
    for _ in range(3):
        a.train_step()
    a.stage = 2
    a.save(tmp_path / "ckpt", step=3, batch_index=7, extra={"wall_s": 1.5})
    b = ToyRun(seed=1)  # different weights, RNG and no optimiser state
    meta = b.load(tmp_path / "ckpt")
    assert (meta["step"], meta["batch_index"], meta["extra"]["wall_s"]) == (3, 7, 1.5)
    assert b.stage == 2 and b.evals == {"forward": 12, "backward": 0}
    for x, y in ((a.student, b.student), (a.extra, b.extra)):
        for p, q in zip(x.state_dict().values(), y.state_dict().values(), strict=True):
            assert torch.equal(p, q)
    # the next step is identical: same Adam moments and the same random draws
    a.train_step()
    b.train_step()
    for p, q in zip(a.student.parameters(), b.student.parameters(), strict=True):
        assert torch.equal(p, q)


def test_another_runs_checkpoint_is_refused_and_a_save_replaces_the_old_one(tmp_path):
    a = ToyRun(seed=0)
    a.save(tmp_path / "ckpt", step=1, batch_index=1, extra={})
    a.stage = 5
    a.save(tmp_path / "ckpt", step=2, batch_index=2, extra={})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no .tmp-* or .old left behind
    other = ToyRun(seed=0)
    other.format = "another-method-1"
    with pytest.raises(ConfigError, match="not a pd distillation checkpoint"):
        other.load(tmp_path / "ckpt")
    assert ToyRun(seed=0).load(tmp_path / "ckpt")["step"] == 2


def test_every_method_shares_warmup_then_cosine_decay_to_the_floor():
    from distill.methods.runloop import lr_schedule

    cfg = load_distill_config("tiny", overrides=["lr=1e-3", "warmup=10", "min_lr_ratio=0.1"])
    lrs = [lr_schedule(step, 110, cfg) for step in range(110)]
    assert lrs[0] == pytest.approx(1e-4) and lrs[9] == pytest.approx(1e-3)  # linear warm-up
    assert lrs[10] == pytest.approx(1e-3)
    assert lrs[60] == pytest.approx(1e-4 + 0.9e-3 * 0.5)  # half-way through the cosine
    assert lr_schedule(110, 110, cfg) == pytest.approx(1e-4)  # the floor at the end
    assert all(a >= b for a, b in itertools.pairwise(lrs[9:]))
    zero = load_distill_config("tiny", overrides=["warmup=0"])
    assert lr_schedule(0, 50, zero) == pytest.approx(zero.lr) and lr_schedule(50, 50, zero) == 0.0


def test_logged_rows_average_scalars_and_per_bin_lists():
    from distill.methods.runloop import aggregate

    rows = [
        {"loss": 1.0, "sbin_gap": [1.0, float("nan"), float("nan")]},
        {"loss": 3.0, "sbin_gap": [3.0, 2.0, float("nan")]},
    ]
    assert aggregate(rows) == {"loss": 2.0, "sbin_gap": [2.0, 2.0, None]}


def test_iters_for_budget_gives_the_fewest_iterations_that_draw_the_budget():
    from distill.methods.mm_alt import MmAltRun
    from distill.methods.runloop import iters_for_budget

    cfg = load_distill_config("shapes32-cpu", None, ["batch_size=32", "warm_start=100"])
    n = iters_for_budget(MmAltRun, cfg, 19200)
    assert n == 350  # 100 warm-start batches, then 250 mm-alt updates of two batches each
    assert MmAltRun.images_for(cfg, n) >= 19200 > MmAltRun.images_for(cfg, n - 1)
    plain = load_distill_config("shapes32-cpu", None, ["method=pd", "steps=4", "teacher_steps=64"])
    assert iters_for_budget(RunBase, plain, 1000) == 32  # one batch of 32 an update: ceil(1000 / 32)
    with pytest.raises(ConfigError, match="budget"):
        iters_for_budget(RunBase, plain, 0)


def test_aggregate_keeps_each_phases_keys_over_its_own_rows():
    from distill.methods.runloop import aggregate

    rows = [{"warm_loss": 1.0, "loss": 1.0}, {"warm_loss": 3.0, "loss": 3.0}, {"gap_rms": 0.5, "loss": 0.2}]
    out = aggregate(rows)
    assert out == {"gap_rms": 0.5, "loss": pytest.approx(1.4), "warm_loss": 2.0}
