"""Writes requirements.lock from a `pip install --dry-run --report` of the base install (no torch).

Usage: python deploy/docker/lock.py build/pip-report.json > deploy/docker/requirements.lock
(`make docker-lock`). The project itself is left out (the image installs it from source), and
setuptools is pinned beside the runtime packages: the image builds fewstep without build
isolation, so an offline build needs no other build tool.
"""

from __future__ import annotations

import json
import sys

SETUPTOOLS = "setuptools==84.2.1"


def main(report_path: str) -> None:
    report = json.loads(open(report_path, encoding="utf-8").read())
    pins = sorted(
        f"{item['metadata']['name'].lower().replace('_', '-')}=={item['metadata']['version']}"
        for item in report["install"]
        if not item.get("is_direct")
    )
    print("# Pinned runtime dependencies of the fewstep images (no torch). Generated: make docker-lock")
    print("\n".join([*pins, SETUPTOOLS]))


if __name__ == "__main__":
    main(sys.argv[1])
