"""The scheduler interface: both schedulers implement it, the batch-cost estimate, and no import cycle
between the engine and its schedulers (not even a lazy or typing-only one)."""

from __future__ import annotations

import ast
from pathlib import Path

from service.engine.policy import DynamicBatchPolicy
from service.engine.request_loop import RequestLoop
from service.engine.scheduler import BatchCost, Scheduler
from service.engine.step_loop import StepLoop
from tests.service.engine.conftest import context

ENGINE_DIR = Path(__file__).resolve().parents[3] / "service" / "engine"


def test_both_schedulers_implement_the_interface():
    ctx = context()
    schedulers: list[Scheduler] = [RequestLoop(ctx, DynamicBatchPolicy(8, 0.0)), StepLoop(ctx)]
    for s in schedulers:
        for name in ("run", "busy", "running", "use_limits"):
            assert hasattr(s, name), (type(s).__name__, name)
        assert not s.busy and list(s.running) == []
    ctx.runner.close()


def test_the_batch_cost_is_an_ema_of_the_observed_seconds():
    cost = BatchCost()
    assert cost.seconds is None
    cost.observe(1.0)
    cost.observe(2.0)
    assert abs(cost.seconds - 1.2) < 1e-12


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports anywhere (top level, in functions, under TYPE_CHECKING)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_nothing_in_the_engine_package_imports_the_engine_module_back():
    importers = [p.name for p in ENGINE_DIR.glob("*.py") if "service.engine.engine" in imports_of(p)]
    assert importers == ["__init__.py"]
    graph = {f"service.engine.{p.stem}": imports_of(p) for p in ENGINE_DIR.glob("*.py") if p.stem != "__init__"}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for m in graph.get(start, ()):
            if m == target or (m not in seen and (seen.add(m) or reaches(m, target, seen))):
                return True
        return False

    cyclic = [m for m in graph if reaches(m, m, set())]
    assert cyclic == [], cyclic
