"""A real `fewstep serve` process (uvicorn, the SIGTERM drain) over fake pipelines whose backend a
test can break from outside: `python -m tests.service.fault_server --port P --fault-file F [settings]`.

The denoiser reads the fault file on every call: empty or missing is normal; `raise` raises on
every call; `raise-once` raises once and empties the file; `raise-student` raises on the calls of
the "student" model only (the one with guidance as a network input); `hang` blocks until the file
says something else. `--per-call-s` is the compute time of one denoiser call (a batch of any size), so
a fake batch costs steps x per_call_s, like a GPU whose batch is nearly free.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from service.backends.fake import FakeDenoiser, fake_pipeline
from service.server import serve
from service.settings import load_settings


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
    import json

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
