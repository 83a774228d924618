"""Run the app under uvicorn (one worker) with a SIGTERM drain.

Plain uvicorn on SIGTERM closes its listening socket at once and gives open requests a grace
period; requests still queued in the engine would be cut off. Here the first SIGTERM instead
closes admission (new requests get 503 and /readyz turns 503, so a load balancer stops sending),
waits up to `drain_timeout_s` for the queue and the running batch to finish, and only then lets
uvicorn shut down. A second signal, or SIGINT, shuts down the usual way.

One worker, because the engine's whole point is one process owning the queue and the backend:
several workers would each load every bundle and batch only their own share of the traffic.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence
from types import FrameType

import uvicorn

from service.app import create_app
from service.engine import Engine
from service.pipeline import Pipeline
from service.settings import ServiceSettings

log = logging.getLogger(__name__)

STARTUP_FAILED = 3


class DrainingServer(uvicorn.Server):
    """uvicorn.Server whose first SIGTERM drains the engine before shutting down."""

    def __init__(self, config: uvicorn.Config, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.drain_timeout_s = drain_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._draining = False

    async def serve(self, sockets: list | None = None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        engine = getattr(getattr(self.config.app, "state", None), "engine", None)
        if sig == signal.SIGTERM and not self._draining and engine is not None and self._loop is not None:
            self._draining = True
            log.info("SIGTERM: draining for up to %.0f s before shutting down", self.drain_timeout_s)
            self._loop.call_soon_threadsafe(self._start_drain, engine)
            return
        super().handle_exit(sig, frame)

    def _start_drain(self, engine: Engine) -> None:
        engine.begin_drain()
        self._drain_task = asyncio.ensure_future(self._drain_then_exit(engine))

    async def _drain_then_exit(self, engine: Engine) -> None:
        drained = await engine.drain(self.drain_timeout_s)
        log.info("drain %s; shutting down", "complete" if drained else "timed out")
        self.should_exit = True


def serve(settings: ServiceSettings, pipelines: Sequence[Pipeline] | None = None) -> int:
    """Serve until shut down; the exit status (0, or STARTUP_FAILED if the app could not start)."""
    app = create_app(settings, pipelines)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        workers=1,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.drain_timeout_s) + 5,
    )
    server = DrainingServer(config, settings.drain_timeout_s)
    server.run()
    return 0 if server.started else STARTUP_FAILED
