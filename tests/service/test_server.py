"""The SIGTERM drain of `fewstep serve` (service.server), against a real server process
(`tests/service/fault_server.py`) under `fewstep bench http` load."""

from __future__ import annotations

import asyncio
import signal
import time

from bench.load import RequestClass, RequestMix, closed_loop, shapes_prompts
from tests.service.fault_server import fault_server


def test_sigterm_under_load_stops_admission_finishes_accepted_work_and_exits_in_time(tmp_path):
    drain_s = 10.0
    with fault_server(tmp_path, per_call_s=0.05, max_batch_images=2, max_wait_s=0.0, drain_timeout_s=drain_s) as server:
        mix = RequestMix([RequestClass(model="fake", steps=4)], shapes_prompts(32), seed=3)

        async def scenario():
            load = asyncio.create_task(closed_loop(server.url, mix, clients=8, seconds=3.0))
            await asyncio.sleep(1.0)
            server.proc.send_signal(signal.SIGTERM)
            t_signal, t_signal_pc = time.monotonic(), time.perf_counter()
            outcomes, _ = await load
            return outcomes, t_signal, t_signal_pc

        outcomes, t_signal, t_signal_pc = asyncio.run(scenario())
        code = server.proc.wait(drain_s + 10)
        exited_after = time.monotonic() - t_signal
    statuses = [o.status for o in outcomes]
    assert code == 0 and exited_after <= drain_s + 5
    assert statuses.count(200) > 0 and 503 in statuses
    # no request lost silently: each got its result, or a 503 (admission closed), or a refused
    # connection after the process exited (status 0 with no bytes sent back: never admitted)
    assert set(statuses) <= {200, 503, 0}
    assert all(o.start >= t_signal_pc for o in outcomes if o.status in (0, 503))
