"""A light HTTP load generator: closed-loop clients and open-loop Poisson arrivals over a request mix.

The client shares the server's cores, so it is plain asyncio streams speaking HTTP/1.1 with
keep-alive (no HTTP library: a request costs one write and a few reads), one coroutine per
in-flight request, and the process CPU time it used is reported beside the figures.

- `RequestMix`: weighted request classes (model, steps, guidance scales, images per request) over
  a pool of shapes-world captions and random seeds; `RequestClass.parse` reads the command-line
  form `model=pd-k4,steps=4,guidance=1.5|3|4.5,n=1,weight=2`. The step-level batching issue
  reuses it with 4- and 8-step requests at several guidance scales.
- `closed_loop(url, mix, clients, seconds)`: each client sends its next request when the last one
  answered (throughput at a concurrency).
- `open_loop(url, mix, rate, seconds)`: arrivals at exponential intervals, each on its own
  coroutine whatever the server's state; a request's latency counts from its scheduled arrival,
  so a stalled client loop cannot hide queueing (no coordinated omission).
- `summarize`: images/s, latency percentiles, queue wait and compute (the server's
  X-Queue-Seconds / X-Compute-Seconds headers), statuses, rejection rate, Retry-After values.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

# --- the request mix -----------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestClass:
    """One kind of request in the mix; None fields take the server's defaults."""

    model: str | None = None
    steps: int | None = None
    guidance: tuple[float, ...] = ()
    n: int = 1
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> RequestClass:
        """`model=NAME,steps=K,guidance=W1|W2,n=N,weight=X` (every key optional)."""
        kw: dict[str, Any] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep:
                raise ValueError(f"request class {text!r}: {part!r} is not key=value")
            if key == "model":
                kw["model"] = value
            elif key == "steps":
                kw["steps"] = int(value)
            elif key == "guidance":
                kw["guidance"] = tuple(float(v) for v in value.split("|"))
            elif key == "n":
                kw["n"] = int(value)
            elif key == "weight":
                kw["weight"] = float(value)
            else:
                raise ValueError(f"request class {text!r}: unknown key {key!r} (model, steps, guidance, n, weight)")
        return cls(**kw)

    @property
    def label(self) -> str:
        parts = [self.model or "default", f"k{self.steps}" if self.steps else "k-default"]
        if self.guidance:
            parts.append("w" + "|".join(f"{w:g}" for w in self.guidance))
        if self.n != 1:
            parts.append(f"n{self.n}")
        return "/".join(parts)


def shapes_prompts(count: int = 256, seed: int = 0) -> list[str]:
    """Distinct shapes-world captions (the service caches encoded prompts, so repeats are realistic)."""
    from shapesworld import sample

    prompts: list[str] = []
    seen: set[str] = set()
    i = 0
    while len(prompts) < count and i < 50 * count:
        caption = sample(seed, i).caption
        i += 1
        if caption not in seen:
            seen.add(caption)
            prompts.append(caption)
    return prompts


@dataclass
class RequestMix:
    classes: Sequence[RequestClass]
    prompts: Sequence[str]
    seed: int = 0
    _rng: random.Random = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not self.classes or not self.prompts:
            raise ValueError("a request mix needs at least one class and one prompt")
        self._rng = random.Random(self.seed)

    def next(self) -> tuple[int, bytes]:
        """(class index, JSON body) of the next request."""
        r = self._rng
        i = r.choices(range(len(self.classes)), weights=[c.weight for c in self.classes])[0]
        c = self.classes[i]
        body: dict[str, Any] = {"prompt": r.choice(self.prompts), "seed": r.randrange(2**30), "n": c.n}
        if c.model:
            body["model"] = c.model
        if c.steps:
            body["steps"] = c.steps
        if c.guidance:
            body["guidance_scale"] = r.choice(c.guidance)
        return i, json.dumps(body).encode()

    def images_per_request(self) -> float:
        total = sum(c.weight for c in self.classes)
        return sum(c.weight * c.n for c in self.classes) / total


# --- a minimal HTTP/1.1 keep-alive client --------------------------------------------------------


class HttpError(Exception):
    pass


class Connection:
    """One keep-alive HTTP/1.1 connection; responses must carry Content-Length (uvicorn's do)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host

    @classmethod
    async def open(cls, host: str, port: int) -> Connection:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer, f"{host}:{port}")

    async def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {self.host}", f"Content-Length: {len(body)}"]
        if body:
            lines.append("Content-Type: application/json")
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed before a response")
        status = int(status_line.split(b" ", 2)[1])
        head: dict[str, str] = {}
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            k, _, v = line.decode("latin-1").partition(":")
            head[k.strip().lower()] = v.strip()
        length = int(head.get("content-length", "0"))
        payload = await self.reader.readexactly(length) if length else b""
        if head.get("connection", "").lower() == "close":
            self.close()
        return status, head, payload

    @property
    def closed(self) -> bool:
        return self.writer.is_closing()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class Pool:
    """Idle keep-alive connections to one server, opened on demand.

    Servers close keep-alive connections that sit idle (uvicorn after 5 s), and a request written
    just as that happens gets no answer. So connections idle for more than `max_idle_s` are
    dropped, and a reused connection that closes before any response byte is retried once on a
    fresh one (the server closed it without reading the request).
    """

    def __init__(self, url: str, max_idle_s: float = 2.0) -> None:
        u = urlsplit(url)
        self.host, self.port = u.hostname or "127.0.0.1", u.port or 80
        self.max_idle_s = max_idle_s
        self._idle: list[tuple[float, Connection]] = []

    def _reuse(self) -> Connection | None:
        now = time.monotonic()
        while self._idle:
            since, conn = self._idle.pop()
            if now - since <= self.max_idle_s and not conn.closed:
                return conn
            conn.close()
        return None

    async def request(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None):
        conn = self._reuse()
        if conn is not None:
            try:
                result = await conn.request(method, path, body, headers)
            except (HttpError, ConnectionResetError, BrokenPipeError):
                conn.close()  # closed by the server while idle: retry on a fresh connection
            except BaseException:
                conn.close()
                raise
            else:
                self._keep(conn)
                return result
        conn = await Connection.open(self.host, self.port)
        try:
            result = await conn.request(method, path, body, headers)
        except BaseException:
            conn.close()
            raise
        self._keep(conn)
        return result

    def _keep(self, conn: Connection) -> None:
        if not conn.closed:
            self._idle.append((time.monotonic(), conn))

    def close(self) -> None:
        for _, c in self._idle:
            c.close()
        self._idle.clear()


# --- load shapes ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    cls: int
    images: int
    status: int  # 0: connection error
    start: float  # scheduled (open loop) or sent (closed loop), perf_counter seconds
    latency_s: float
    queue_s: float | None = None
    compute_s: float | None = None
    retry_after: str | None = None


ACCEPT = {"Accept": "image/png"}  # one-image requests get the PNG itself (no base64); n > 1 gets JSON


async def _one(pool: Pool, mix: RequestMix, cls: int, body: bytes, start: float, path: str) -> Outcome:
    n = mix.classes[cls].n
    try:
        status, head, _ = await pool.request("POST", path, body, ACCEPT if n == 1 else None)
    except (OSError, HttpError, asyncio.IncompleteReadError, ValueError):
        return Outcome(cls, n, 0, start, time.perf_counter() - start)
    latency = time.perf_counter() - start
    q, c = head.get("x-queue-seconds"), head.get("x-compute-seconds")
    return Outcome(
        cls,
        n,
        status,
        start,
        latency,
        float(q) if q else None,
        float(c) if c else None,
        head.get("retry-after"),
    )


async def closed_loop(
    url: str, mix: RequestMix, clients: int, seconds: float, path: str = "/generate"
) -> tuple[list[Outcome], float]:
    """`clients` loops, each sending its next request when the last answered, for `seconds`."""
    pool = Pool(url)
    outcomes: list[Outcome] = []
    begin = time.perf_counter()
    end = begin + seconds

    async def client() -> None:
        while time.perf_counter() < end:
            cls, body = mix.next()
            outcomes.append(await _one(pool, mix, cls, body, time.perf_counter(), path))
            if outcomes[-1].status == 0:
                await asyncio.sleep(0.01)  # a refused connection: do not spin

    await asyncio.gather(*(client() for _ in range(clients)))
    wall = time.perf_counter() - begin
    pool.close()
    return outcomes, wall


async def open_loop(
    url: str, mix: RequestMix, rate: float, seconds: float, seed: int = 0, path: str = "/generate"
) -> tuple[list[Outcome], float]:
    """Poisson arrivals at `rate` requests/s for `seconds`; waits for every request sent to answer."""
    pool = Pool(url)
    rng = random.Random(seed)
    tasks: list[asyncio.Task[Outcome]] = []
    begin = time.perf_counter()
    t = begin
    while True:
        t += rng.expovariate(rate)
        if t - begin > seconds:
            break
        delay = t - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        cls, body = mix.next()
        tasks.append(asyncio.create_task(_one(pool, mix, cls, body, t, path)))
    outcomes = list(await asyncio.gather(*tasks))
    wall = max(seconds, max((o.start + o.latency_s for o in outcomes), default=begin) - begin)
    pool.close()
    return outcomes, wall


# --- figures -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100); None for no values."""
    if not values:
        return None
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def summarize(outcomes: Sequence[Outcome], wall_s: float, mix: RequestMix | None = None) -> dict[str, Any]:
    ok = [o for o in outcomes if o.status == 200]
    lat = [o.latency_s for o in ok]
    queue = [o.queue_s for o in ok if o.queue_s is not None]
    compute = [o.compute_s for o in ok if o.compute_s is not None]
    over = [o.latency_s - o.queue_s - o.compute_s for o in ok if o.queue_s is not None and o.compute_s is not None]
    statuses = Counter(o.status for o in outcomes)
    out: dict[str, Any] = {
        "requests": len(outcomes),
        "ok": len(ok),
        "wall_s": wall_s,
        "requests_per_s": len(ok) / wall_s if wall_s else 0.0,
        "images_per_s": sum(o.images for o in ok) / wall_s if wall_s else 0.0,
        "latency_s": {f"p{q}": percentile(lat, q) for q in (50, 95, 99)} | {"mean": _mean(lat)},
        "queue_s": {f"p{q}": percentile(queue, q) for q in (50, 95, 99)},
        "compute_s": {f"p{q}": percentile(compute, q) for q in (50, 99)},
        # outside the engine: HTTP parsing, routing, PNG encoding, the response, the client itself
        "overhead_s": {f"p{q}": percentile(over, q) for q in (50, 99)},
        "latencies_s": [round(o.latency_s, 5) for o in ok],
        "classes": [o.cls for o in ok],
        "computes_s": [round(o.compute_s, 5) for o in ok if o.compute_s is not None],
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "rejection_rate": (len(outcomes) - len(ok)) / len(outcomes) if outcomes else 0.0,
        "retry_after": sorted({o.retry_after for o in outcomes if o.retry_after}),
    }
    if mix is not None and len(mix.classes) > 1:
        out["by_class"] = {
            c.label: {
                "ok": sum(1 for o in ok if o.cls == i),
                "latency_p50_s": percentile([o.latency_s for o in ok if o.cls == i], 50),
                "latency_p99_s": percentile([o.latency_s for o in ok if o.cls == i], 99),
            }
            for i, c in enumerate(mix.classes)
        }
    return out


def fifo_p99(service_s: Sequence[float], rate: float, n: int = 200_000, seed: int = 0) -> float | None:
    """p99 sojourn time of an ideal single FIFO server (M/G/1, no batching) with Poisson arrivals at
    `rate` and service times drawn from `service_s` (Lindley's recursion): the queueing floor.
    None when that server would be overloaded (utilisation rate x mean service >= 1): its queue
    grows without bound, so there is no floor (only a batching server keeps up at that rate)."""
    if rate * sum(service_s) / len(service_s) >= 1:
        return None
    rng = random.Random(seed)
    wait, sojourn = 0.0, []
    prev_service = 0.0
    for _ in range(n):
        gap = rng.expovariate(rate)
        wait = max(0.0, wait + prev_service - gap)
        prev_service = rng.choice(service_s)
        sojourn.append(wait + prev_service)
    return percentile(sojourn, 99) or 0.0


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def outcomes_json(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    return [asdict(o) for o in outcomes]
