"""The body-read timeout (FEWSTEP_BODY_TIMEOUT_S, service.api.middleware) against a real uvicorn
process (`tests/service/fault_server.py`): clients that trickle their bodies a byte at a time get
408 and lose their connection once the bound passes, while the server keeps answering everyone else."""

from __future__ import annotations

import json
import socket
import threading
import time
from urllib.parse import urlsplit

import httpx

from tests.service.fault_server import fault_server

BODY_TIMEOUT_S = 1.0
BYTE_EVERY_S = 0.1  # 10 bytes a second: a 40-byte body would take 4 s


class Trickler(threading.Thread):
    """A raw-socket client: whole headers at once, then the body one byte every BYTE_EVERY_S, reading
    whatever the server sends meanwhile, until the server closes the connection (or `give_up_s`)."""

    def __init__(self, url: str, give_up_s: float = 15.0, method: str = "POST", path: str = "/generate") -> None:
        super().__init__(daemon=True)
        self.method, self.path = method, path
        u = urlsplit(url)
        self.address = (u.hostname or "127.0.0.1", u.port or 80)
        self.give_up_s = give_up_s
        self.body = json.dumps({"prompt": "a red circle", "seed": 1, "pad": "x" * 12}).encode()
        self.reply = b""
        self.sent = 0
        self.closed_after_s: float | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as e:  # reported by the test, not lost in the thread
            self.error = e

    def _run(self) -> None:
        with socket.create_connection(self.address, timeout=5) as s:
            head = (
                f"{self.method} {self.path} HTTP/1.1\r\nHost: {self.address[0]}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(self.body)}\r\n\r\n"
            )
            s.sendall(head.encode())
            start = time.monotonic()
            s.settimeout(BYTE_EVERY_S)
            while time.monotonic() - start < self.give_up_s:
                if self.sent < len(self.body):
                    try:
                        s.sendall(self.body[self.sent : self.sent + 1])
                        self.sent += 1
                    except OSError:  # the server closed its side
                        pass
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    continue
                except OSError:
                    chunk = b""
                if not chunk:
                    self.closed_after_s = time.monotonic() - start
                    return
                self.reply += chunk
                if self._complete():  # answered after the whole body: the connection stays open (keep-alive)
                    return

    def _complete(self) -> bool:
        """A whole response that leaves the connection open (one that says `close` is read to the close)."""
        head, sep, payload = self.reply.partition(b"\r\n\r\n")
        if b"connection: close" in head.lower():
            return False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if sep and name.strip().lower() == b"content-length":
                return len(payload) >= int(value)
        return False

    @property
    def status(self) -> int | None:
        line = self.reply.split(b"\r\n", 1)[0].split()
        return int(line[1]) if len(line) > 1 else None


def test_trickling_bodies_get_408_and_the_server_keeps_serving_others(tmp_path):
    with fault_server(tmp_path, body_timeout_s=BODY_TIMEOUT_S, max_batch_images=4, max_wait_s=0.0) as server:
        # two bodies to /generate, one to a GET route (a GET may carry a body too)
        slow = [Trickler(server.url), Trickler(server.url), Trickler(server.url, method="GET", path="/v1/models")]
        for t in slow:
            t.start()
        # while they trickle, ordinary clients are served as usual
        served = []
        with httpx.Client(base_url=server.url, timeout=10) as client:
            deadline = time.monotonic() + BODY_TIMEOUT_S
            while time.monotonic() < deadline:
                r = client.post("/generate", json={"prompt": "a blue square", "seed": len(served)})
                served.append(r.status_code)
                assert client.get("/healthz").status_code == 200
        for t in slow:
            t.join(20)
        # after them, too
        after = httpx.post(f"{server.url}/generate", json={"prompt": "a green triangle", "seed": 7}, timeout=10)
        rejected = server.metric("fewstep_requests_rejected_total", reason="body_timeout")
    assert served and set(served) == {200}
    assert after.status_code == 200
    for t in slow:
        assert t.error is None, t.error
        assert t.status == 408, t.reply[:300]
        head, _, payload = t.reply.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower()
        assert json.loads(payload)["error"]["code"] == "request_timeout"
        # cut off at the bound (plus scheduling slack on a loaded machine), long before the body was done
        assert t.closed_after_s is not None and BODY_TIMEOUT_S <= t.closed_after_s < BODY_TIMEOUT_S + 3
        assert t.sent < len(t.body)
    assert rejected == len(slow)


def test_a_slow_but_timely_body_is_served(tmp_path):
    """The bound is on the whole body, not per byte: a body that arrives in pieces within it is fine."""
    with fault_server(tmp_path, body_timeout_s=5.0, max_batch_images=4, max_wait_s=0.0) as server:
        t = Trickler(server.url)
        t.body = json.dumps({"prompt": "a red circle", "seed": 1}).encode()  # 35 bytes: about 3.5 s
        t.start()
        t.join(20)
    assert t.error is None and t.sent == len(t.body)
    assert t.status == 200, t.reply[:300]
