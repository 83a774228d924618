"""Overload and faults against a real server process (`tests/service/fault_server.py`: uvicorn, the
SIGTERM drain, fake pipelines whose backend the test breaks through a file), driven by the
`fewstep bench http` load generator.

Fast variants run in the default suite; the 30-second flood and the 5,000-request memory check are
marked slow.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from bench.load import Pool, RequestClass, RequestMix, open_loop, shapes_prompts
from tests.service.fault_server import FaultServer, fault_server


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def post(url: str, timeout: float = 30, **body) -> httpx.Response:
    return httpx.post(f"{url}/generate", json={"prompt": "a red circle", "seed": 1, **body}, timeout=timeout)


def assert_json_error(r: httpx.Response, status: int) -> None:
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    error = r.json()["error"]
    assert error["message"] and "Traceback" not in error["message"]


# --- floods --------------------------------------------------------------------------------------


def flood(server: FaultServer, seconds: float, rate: float) -> list:
    mix = RequestMix([RequestClass(model="fake", steps=4)], shapes_prompts(64), seed=1)
    outcomes, _ = asyncio.run(open_loop(server.url, mix, rate, seconds, seed=1))
    return outcomes


def check_flood(server: FaultServer, outcomes: list) -> None:
    statuses = {o.status for o in outcomes}
    assert statuses <= {200, 429, 504}, statuses  # no 500, no connection errors
    assert sum(o.status == 200 for o in outcomes) > 0 and sum(o.status == 429 for o in outcomes) > 0
    refused = [o for o in outcomes if o.status == 429]
    assert all(o.retry_after and int(o.retry_after) >= 1 for o in refused)
    # every accepted request was answered: nothing is left in flight or queued
    assert server.metric("fewstep_in_flight_requests") == 0
    assert server.metric("fewstep_queue_depth_images") == 0
    assert server.ready() == 200 and post(server.url).status_code == 200


# capacity: batches of at most 4 images, 4 steps x 50 ms = 0.2 s each -> 20 images/s; floods at 10x
FLOOD = {"per_call_s": 0.05, "max_batch_images": 4, "max_wait_s": 0.0, "queue_limit_images": 16}


def test_a_burst_at_ten_times_capacity_gets_only_200_429_with_retry_after_or_504(tmp_path):
    with fault_server(tmp_path, request_timeout_s=5.0, **FLOOD) as server:
        outcomes = flood(server, seconds=3.0, rate=200.0)
        check_flood(server, outcomes)


@pytest.mark.slow
def test_thirty_seconds_at_ten_times_capacity_and_memory_after_at_most_1_1x(tmp_path):
    with fault_server(tmp_path, request_timeout_s=5.0, **FLOOD) as server:
        flood(server, seconds=3.0, rate=40.0)  # reach steady state (allocator pools, prompt cache)
        before = rss_bytes(server.proc.pid)
        outcomes = flood(server, seconds=30.0, rate=200.0)
        check_flood(server, outcomes)
        after = rss_bytes(server.proc.pid)
    assert after <= 1.1 * before, (before, after)


@pytest.mark.slow
def test_memory_stays_flat_over_5000_requests(tmp_path):
    with fault_server(tmp_path, per_call_s=0.0, max_batch_images=16, max_wait_s=0.0) as server:
        mix = RequestMix([RequestClass(model="fake", steps=4)], shapes_prompts(256), seed=2)

        async def requests(count: int, clients: int = 10) -> list[int]:
            pool, statuses = Pool(server.url), []

            async def client(k: int) -> None:
                for _ in range(k):
                    _, body = mix.next()
                    statuses.append((await pool.request("POST", "/generate", body, {"Accept": "image/png"}))[0])

            await asyncio.gather(*(client(count // clients) for _ in range(clients)))
            pool.close()
            return statuses

        assert set(asyncio.run(requests(1000))) == {200}  # warm: every prompt of the pool is cached
        before = rss_bytes(server.proc.pid)
        statuses = asyncio.run(requests(5000))
        after = rss_bytes(server.proc.pid)
    assert statuses.count(200) == 5000
    assert after <= 1.1 * before, (before, after)


# --- backend faults ------------------------------------------------------------------------------


def test_a_backend_error_fails_only_its_batch_with_json_500_and_the_next_batch_succeeds(tmp_path):
    with fault_server(tmp_path, max_batch_images=8, max_wait_s=0.3) as server:
        server.fault("raise-student")  # every batch of the "student" model raises; "fake" batches do not

        async def scenario():
            pool = Pool(server.url)

            async def send(model: str, seed: int):
                body = json.dumps({"prompt": "a red circle", "seed": seed, "model": model}).encode()
                return await pool.request("POST", "/generate", body)

            tasks = [send(m, i) for i in range(3) for m in ("student", "fake")]
            results = await asyncio.gather(*tasks)
            pool.close()
            return results

        results = asyncio.run(scenario())
        student, fake = results[0::2], results[1::2]
        assert [r[0] for r in student] == [500] * 3 and [r[0] for r in fake] == [200] * 3
        for _, headers, body in student:
            error = json.loads(body)["error"]
            assert headers["content-type"].startswith("application/json") and "injected" in error["message"]
            assert "Traceback" not in error["message"]
        assert json.loads(fake[0][2])["batch_images"] == 3  # the three "fake" requests ran together
        assert server.ready() == 200
        server.fault("")
        assert post(server.url, model="student").status_code == 200  # the model's next batch succeeds
        assert server.metric("fewstep_batch_failures_total", model="student") == 1

        server.fault("raise-once")  # a single failing call: its batch fails, the next one does not
        assert_json_error(post(server.url, model="fake", seed=5), 500)
        assert post(server.url, model="fake", seed=5).status_code == 200
        assert server.ready() == 200


def test_a_hanging_backend_gives_504_at_the_deadline_and_the_service_recovers(tmp_path):
    with fault_server(tmp_path, request_timeout_s=1.0, max_batch_images=8, max_wait_s=0.0) as server:
        server.fault("hang")
        t0 = time.monotonic()
        r = post(server.url)
        elapsed = time.monotonic() - t0
        assert_json_error(r, 504)
        assert 0.9 <= elapsed <= 3.0, elapsed
        assert_json_error(post(server.url, seed=2), 504)  # queued behind the hung batch: same deadline
        assert server.ready() == 200  # the process is alive and still admitting
        server.fault("")
        end = time.monotonic() + 10
        while (r := post(server.url, seed=3)).status_code != 200 and time.monotonic() < end:
            time.sleep(0.1)
        assert r.status_code == 200
        assert server.metric("fewstep_requests_rejected_total", reason="deadline") >= 2


def test_clients_that_disconnect_are_dropped_from_the_queue(tmp_path):
    with fault_server(tmp_path, max_batch_images=1, max_wait_s=0.0) as server:
        server.fault("hang")
        body = json.dumps({"prompt": "a red circle", "seed": 1}).encode()
        socks = []
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", int(server.url.rsplit(":", 1)[1])))
            head = (
                f"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            )
            s.sendall(head.encode() + b"\r\n\r\n" + body)
            socks.append(s)
        end = time.monotonic() + 10
        while server.metric("fewstep_in_flight_requests") < 5 and time.monotonic() < end:
            time.sleep(0.05)
        assert server.metric("fewstep_queue_depth_requests") == 4  # one runs (hung), four queue
        for s in socks:
            s.close()
        while server.metric("fewstep_queue_depth_requests") > 0 and time.monotonic() < end:
            time.sleep(0.05)
        assert server.metric("fewstep_queue_depth_requests") == 0
        assert server.metric("fewstep_requests_rejected_total", reason="disconnected") == 4
        server.fault("")
        assert post(server.url, seed=9).status_code == 200
        assert server.metric("fewstep_in_flight_requests") == 0
