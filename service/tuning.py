"""Start-up measurements kept per machine (`FEWSTEP_TUNING_CACHE`), so that restarts reuse them.

A starting service measures two things: which backend path is fastest here (`backend.kind=auto`,
`service.backends.select`) and how much a fuller batch buys (the engine's cost profile,
`service.engine.profile`). Both are noisy on a shared CPU: OpenVINO's per-size timings moved by
up to 1.7x from one start to the next on the same machine, and the chosen max batch moved with
them (BENCHMARKS.md, issue 18); and both cost seconds of every start.

What they measure belongs to the machine, the runtime and the bundle, not to the start. So the
cache keeps the raw measurements under a key made of:

- the machine: CPU model, the CPUs this process may run on, its cgroup CPU quota, architecture;
- the runtime: the installed onnxruntime and openvino versions;
- what was measured: the bundle's file hashes, the backend path and its settings, and the
  measurement's own settings and version (`TUNING_VERSION`).

A change in any of them misses and measures again. It keeps measurements, not decisions: the rules
that turn timings into a choice (tolerances, the wait rule) run afresh at every start, so changing
a rule needs no re-measurement. A first start measures (with a longer budget than a start without
the cache could afford: it is paid once per machine) and writes; later starts read, and serve the
same choice. `refresh` measures again and overwrites.

Why a file of our own and not a library: the entries are a few hundred bytes of JSON, read once at
start-up. Writes go to a temporary file that replaces the cache (`os.replace`), so a replica
sharing the file never reads half of one; two replicas writing at once can drop one entry, which
is measured again at that replica's next start. A cache that cannot be read or written is logged
and ignored: it must never stop the service from starting.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TUNING_VERSION = 1
RUNTIMES = ("onnxruntime", "openvino")


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _cpu_quota() -> str | None:
    """cgroup v2 `cpu.max` (`max 100000`, or `200000 100000` for two CPUs' worth), if there is one."""
    with contextlib.suppress(OSError):
        return Path("/sys/fs/cgroup/cpu.max").read_text().strip()
    return None


def machine_fingerprint() -> dict[str, Any]:
    """What makes this machine's timings this machine's (see the module docstring)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    runtimes = {}
    for name in RUNTIMES:
        with contextlib.suppress(metadata.PackageNotFoundError):
            runtimes[name] = metadata.version(name)
    return {
        "cpu": _cpu_model(),
        "cpus": cpus,
        "cpu_quota": _cpu_quota(),
        "arch": platform.machine(),
        "runtimes": runtimes,
    }


def bundle_identity(files: dict[str, str]) -> str:
    """One hash of a bundle's manifest file hashes: same graphs and weights, same identity."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


class TuningCache:
    """Measurements by key in one JSON file (see the module docstring)."""

    def __init__(self, path: str | Path, refresh: bool = False, machine: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        self.refresh = refresh
        self.machine = machine if machine is not None else machine_fingerprint()

    def key(self, what: str, fields: dict[str, Any]) -> str:
        doc = {"version": TUNING_VERSION, "machine": self.machine, "what": what, "fields": fields}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def _read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {}
        try:
            doc = json.loads(self.path.read_text())
            if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
                raise ValueError("no 'entries' object")
            return doc["entries"]
        except (OSError, ValueError) as e:
            log.warning("tuning cache %s is unreadable (%s): measuring afresh", self.path, e)
            return {}

    def get(self, what: str, fields: dict[str, Any]) -> dict[str, Any] | None:
        """The measurement kept for `what` under `fields` on this machine, or None (also with `refresh`)."""
        if self.refresh:
            return None
        entry = self._read().get(self.key(what, fields))
        return entry.get("value") if isinstance(entry, dict) else None

    def put(self, what: str, fields: dict[str, Any], value: dict[str, Any]) -> None:
        """Keep `value` for `what` under `fields`; a cache that cannot be written is logged, not raised."""
        entries = self._read()
        entries[self.key(what, fields)] = {
            "what": what,
            "fields": fields,
            "machine": self.machine,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "value": value,
        }
        tmp: str | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
            with os.fdopen(fd, "w") as f:
                json.dump({"version": TUNING_VERSION, "entries": entries}, f, indent=1, sort_keys=True)
            os.replace(tmp, self.path)
        except OSError as e:
            log.warning("tuning cache %s cannot be written (%s): the next start measures again", self.path, e)
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
