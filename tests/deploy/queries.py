"""The metric names the dashboard and the alert rules query, and the names a scrape exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/fewstep.json"
RULES = sorted((ROOT / "deploy/prometheus/rules").glob("*.yml"))
# fewstep_* series names; recording rules (fewstep:...) have a colon and are not matched.
METRIC = re.compile(r"\bfewstep_[a-z0-9_]+\b")


def dashboard_exprs() -> list[str]:
    def walk(node) -> Iterable[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "expr" and isinstance(value, str) and value:
                    yield value
                else:
                    yield from walk(value)
        elif isinstance(node, list):
            for item in node:
                yield from walk(item)

    return list(walk(json.loads(DASHBOARD.read_text())))


def rule_exprs() -> list[str]:
    return [rule["expr"] for path in RULES for g in yaml.safe_load(path.read_text())["groups"] for rule in g["rules"]]


def referenced_metrics() -> set[str]:
    return {m for expr in [*dashboard_exprs(), *rule_exprs()] for m in METRIC.findall(expr)}


def exported_names(families) -> set[str]:
    """Every sample name of a parsed scrape (histograms give _bucket, _count and _sum)."""
    return {sample.name for family in families for sample in family.samples}
