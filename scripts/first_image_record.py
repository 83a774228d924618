"""One run of scripts/first_image.sh into its results file: time to the first image, its phases, sizes.

The phases come from what the clone's `make serve` leaves behind, so the measurement needs no hook in
the Makefile: the mtime of each venv's stamp (`.installed-*`, written when its lock is installed), of
each bundle's manifest.json (written last by an export) and the service's own "ready" log line. Each
is given in seconds from the start of the clone; a phase that did not happen (bundles already there,
say) is null. `cpu_seconds` is the CPU time of everything the run started (make's process group:
the installs, the exports, the server), read from /proc just before it is stopped: on a shared
machine the wall time grows with the load, the CPU time much less. Sizes are apparent sizes (`du -sb`
of each venv alone): uv hard-links files from its cache, so the disk a second clone adds is far
less; `sizes_mb.uv_cache` puts the cache beside them.

Stdlib only: it runs under the system Python, outside any venv.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

READY = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO service\.app: ready", re.M)
VENVS = (".venv-serve", ".venv-export", ".venv")


def du_mb(path: Path) -> float | None:
    """Apparent size of `path` in MB (None when absent), counted alone so hard links count in full."""
    if not path.exists():
        return None
    out = subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True, check=True).stdout
    return round(int(out.split()[0]) / 1e6, 1)


def stamp_time(venv: Path) -> float | None:
    stamps = sorted(venv.glob(".installed-*"))
    return stamps[-1].stat().st_mtime if stamps else None


def ready_time(log: str) -> float | None:
    """The epoch of the service's ready line (logging's asctime is local time, to the millisecond)."""
    m = READY.search(log)
    if not m:
        return None
    local = datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")
    return time.mktime(local.timetuple()) + int(m.group(2)) / 1000


def machine() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", cpuinfo, re.M)
    mem = re.search(r"^MemTotal:\s*(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
    return {
        "cpu": model.group(1).strip() if model else platform.processor(),
        "cores": os.cpu_count(),
        "memory_gb": round(int(mem.group(1)) / 2**20, 1) if mem else None,
        "amx": bool(flags and "amx_tile" in flags.group(1).split()),
        "python": platform.python_version(),
    }


def group_cpu_seconds(pgid: int) -> float:
    """User + system time of the live processes of group `pgid` and of the children they reaped."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        # after the command name: state ppid pgrp ... utime(12) stime(13) cutime(14) cstime(15)
        if int(fields[2]) == pgid:
            total += sum(int(f) for f in fields[11:15])
    return round(total / tick, 1)


def since(t: float | None, t0: float) -> float | None:
    return None if t is None else round(t - t0, 1)


def record(args: argparse.Namespace) -> dict[str, Any]:
    clone = Path(args.clone)
    log = Path(args.log).read_text(errors="replace")
    bundles = sorted(clone.glob("bundles/*/manifest.json"))
    reply = json.loads(Path(args.reply).read_text())
    t0 = args.t0
    cache = Path(args.cache_root)
    served = ".venv-serve" if (clone / ".venv-serve").is_dir() else ".venv"
    return {
        "run": args.run,
        "seconds_to_first_image": round(args.t_first - t0, 1),
        "cpu_seconds": args.cpu_seconds,
        "phases_s_from_start": {
            "clone": since(args.t_clone, t0),
            "serve_venv": since(stamp_time(clone / ".venv-serve"), t0),
            "export_venv": since(stamp_time(clone / ".venv-export"), t0),
            "dev_venv": since(stamp_time(clone / ".venv"), t0),
            "bundles": since(max((p.stat().st_mtime for p in bundles), default=None), t0),
            "service_ready": since(ready_time(log), t0),
            "first_image": since(args.t_first, t0),
        },
        "sizes_mb": {
            **{v.lstrip("."): du_mb(clone / v) for v in VENVS},
            "bundles": du_mb(clone / "bundles"),
            "uv_cache": du_mb(cache / "uv"),
        },
        # the venv `make serve` ran the service from: .venv-serve, or .venv before it existed
        "served_from": served,
        "torch_in_served_venv": any((clone / served).glob("lib/python*/site-packages/torch")),
        "served_model": reply.get("model"),
        "load_average": {"start": args.load_start, "end": args.load_end},
        "commit": subprocess.run(
            ["git", "-C", str(clone), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip(),
    }


def markdown(doc: dict[str, Any]) -> str:
    """The runs of one results file as a table (written beside it, from it alone)."""
    m = doc["machine"]
    amx = "AMX" if m["amx"] else "no AMX"
    lines = [
        f"# Fresh clone to first image: commit {doc['commit'][:10]}",
        "",
        f"Written by `{doc['command']}` from {Path(doc.get('json', 'first_image.json')).name}; machine: "
        f"{m['cores']}-core {m['cpu']} VM ({amx}), {m['memory_gb']} GB, Python {m['python']}. Wall times grow "
        "with the machine's load (its load average at the start of each run is given); CPU seconds much less.",
        "",
        "| run | first image (s) | CPU (s) | what was done when (s from the start of the clone) "
        "| serving venv (MB) | export venv (MB) | torch where it serves | load average |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in doc["runs"].items():
        done = sorted((t, k.replace("_", " ")) for k, t in r["phases_s_from_start"].items() if t is not None)
        sz = r["sizes_mb"]
        lines.append(
            f"| {name} | {r['seconds_to_first_image']} | {r['cpu_seconds']} | "
            + ", ".join(f"{k} {t}" for t, k in done)
            + f" | {sz.get('venv-serve') or sz.get('venv')} | {sz.get('venv-export') or '-'} "
            f"| {'yes' if r['torch_in_served_venv'] else 'no'} ({r['served_from']}) "
            f"| {r['load_average']['start'].split()[0]} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 2 and argv[0] == "--cpu-of":  # first_image.sh, just before it stops the run
        print(group_cpu_seconds(int(argv[1])))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--run", required=True)
    p.add_argument("--clone", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--reply", required=True)
    p.add_argument("--cache-root", required=True)
    for name in ("--t0", "--t-clone", "--t-first", "--cpu-seconds"):
        p.add_argument(name, type=float, required=True)
    p.add_argument("--load-start", required=True)
    p.add_argument("--load-end", required=True)
    args = p.parse_args(argv)
    row = record(args)
    out = Path(args.out)
    doc = json.loads(out.read_text()) if out.exists() else {}
    if doc.get("machine") != machine():  # another machine's runs are not kept beside this one's
        doc = {"machine": machine(), "command": "make first-image (scripts/first_image.sh)", "runs": {}}
    doc["runs"][args.run] = row
    doc["commit"] = row["commit"]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown({**doc, "json": str(out)}))
    print(
        f"{args.run}: first image after {row['seconds_to_first_image']} s ({args.cpu_seconds} CPU s); serve venv "
        f"{row['sizes_mb']['venv-serve']} MB, export venv {row['sizes_mb']['venv-export']} MB "
        f"(load average {args.load_start} -> {args.load_end}); {out}"
    )


if __name__ == "__main__":
    main()
