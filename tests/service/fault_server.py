"""A real `fewstep serve` process (uvicorn, the SIGTERM drain) over fake pipelines whose backend a
test can break from outside: `python -m tests.service.fault_server --port P --fault-file F [settings]`.

The denoiser reads the fault file on every call: empty or missing is normal; `raise` raises on
every call; `raise-once` raises once and empties the file; `raise-student` raises on the calls of
the "student" model only (the one with guidance as a network input); `hang` blocks until the file
says something else. `--per-call-s` is the compute time of one denoiser call (a batch of any size), so
a fake batch costs steps x per_call_s, like a GPU whose batch is nearly free.

Tests start one with `fault_server(tmp_path, **settings)` and drive it through `FaultServer`.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from service.fakes import FakeDenoiser, fake_pipeline
from service.server import serve
from service.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class FaultServer:
    def __init__(self, proc: subprocess.Popen, url: str, fault_file: Path, log: Path) -> None:
        self.proc, self.url, self.fault_file, self.log = proc, url, fault_file, log

    def fault(self, what: str) -> None:
        self.fault_file.write_text(what)

    def metric(self, name: str, **labels: str) -> float:
        from prometheus_client.parser import text_string_to_metric_families

        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                    return s.value
        return 0.0

    def ready(self) -> int:
        return httpx.get(f"{self.url}/readyz", timeout=10).status_code


@contextmanager
def fault_server(tmp_path: Path, per_call_s: float = 0.005, **settings) -> Iterator[FaultServer]:
    port = free_port()
    fault_file = tmp_path / f"fault-{port}"
    fault_file.write_text("")
    log = tmp_path / f"serve-{port}.log"
    cmd = [sys.executable, "-m", "tests.service.fault_server", "--port", str(port), "--fault-file", str(fault_file)]
    cmd += ["--per-call-s", str(per_call_s), "--set", *(f"{k}={json.dumps(v)}" for k, v in settings.items())]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, env={**os.environ})
    url = f"http://127.0.0.1:{port}"
    try:
        end = time.monotonic() + 60
        while time.monotonic() < end:
            assert proc.poll() is None, f"fault server exited with {proc.returncode}: {log.read_text()[-2000:]}"
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError(f"fault server not ready: {log.read_text()[-2000:]}")
        yield FaultServer(proc, url, fault_file, log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


class FaultyDenoiser(FakeDenoiser):
    def __init__(self, fault_file: Path, per_call_s: float) -> None:
        super().__init__(delay_s=per_call_s)
        self.fault_file = fault_file

    def _fault(self) -> str:
        try:
            return self.fault_file.read_text().strip()
        except OSError:
            return ""

    def __call__(self, z, t, states, mask, w=None):
        fault = self._fault()
        if fault == "raise-once":
            self.fault_file.write_text("")
            raise RuntimeError("injected backend failure (once)")
        if fault == "raise" or (fault == "raise-student" and w is not None):
            raise RuntimeError("injected backend failure")
        while fault == "hang":
            time.sleep(0.02)
            fault = self._fault()
        return super().__call__(z, t, states, mask, w)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--fault-file", type=Path, required=True)
    p.add_argument("--per-call-s", type=float, default=0.005)
    p.add_argument("--set", nargs="*", default=[], help="settings as key=value (JSON values)")
    args = p.parse_args()
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key] = value
    settings = load_settings(port=args.port, log_level="warning", **overrides)
    den = FaultyDenoiser(args.fault_file, args.per_call_s)
    pipelines = [fake_pipeline("fake", den, steps=(4, 8)), fake_pipeline("student", den, network_input=True)]
    return serve(settings, pipelines)


if __name__ == "__main__":
    raise SystemExit(main())
