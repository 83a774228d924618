"""The peer server: LitServe serving one bundle through this project's own pipeline.

`fewstep bench peer` compares fewstep's server with a well-kept general-purpose model server on the
same work, so that what differs is the serving layer (admission, batching, event loop, encoding),
not the model: this app loads the bundle with `service.loader.load_pipeline` (the same graphs,
backend settings and prompt cache as `fewstep serve`), batches with LitServe's own dynamic batcher
(`max_batch_size`, `batch_timeout`) and answers the request shape the load generator sends
(`bench.load`: JSON `prompt`, `seed`, `steps`, `guidance_scale`, one image per request, returned as
PNG bytes with `Accept: image/png`).

Run as a process (LitServe starts its API server and inference worker as processes of its own);
`fewstep bench peer` starts it so (`bench.peer.PeerProcess`):

    fewstep bench peer-server --bundle bundles/pd-k4 --port 8100 --max-batch 16 --batch-timeout 0.005

LitServe is an optional dependency (the `peer` extra); nothing else in fewstep imports this module.
The request parsing it shares with the tests lives in `bench.peer`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import litserve as ls
from fastapi import HTTPException, Response

from bench.peer import job_from_body
from service.api.encode import encode_image

log = logging.getLogger(__name__)


class PipelineAPI(ls.LitAPI):
    """One bundle's `Pipeline` behind LitServe's batcher (module level: LitServe pickles it into
    its worker process)."""

    def __init__(self, bundle: str, settings: dict[str, Any], max_batch: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch, batch_timeout=batch_timeout, api_path="/generate")
        self.bundle, self.settings, self.max_batch = bundle, settings, max_batch

    def setup(self, device: str) -> None:
        from service.backends.base import BackendSettings
        from service.loader import load_pipeline

        self.pipeline = load_pipeline(self.bundle, BackendSettings(**self.settings), warmup=(1, self.max_batch))
        m = self.pipeline.manifest
        self.steps, self.guidance = m.default_steps, m.guidance.default
        log.info("peer: %s on %s, max batch %d", m.name, self.settings, self.max_batch)

    def decode_request(self, request):  # no annotation: LitServe passes the parsed JSON body
        try:
            job = job_from_body(request, self.steps, self.guidance)
            self.pipeline.check(job)
        except (ValueError, TypeError) as e:
            raise HTTPException(status_code=422, detail=str(e)) from None
        return job

    def batch(self, inputs):
        return list(inputs)

    def predict(self, jobs):
        # One pipeline call per LitServe batch; the pipeline needs one step count per call, so
        # mixed counts (not in the compared load, one count per model) run one call per count.
        out: list[Any] = [None] * len(jobs)
        for steps in {j.steps for j in jobs}:
            idx = [i for i, j in enumerate(jobs) if j.steps == steps]
            for i, image in zip(idx, self.pipeline.generate([jobs[i] for i in idx]), strict=True):
                out[i] = image
        return out

    def unbatch(self, output):
        return list(output)

    def encode_response(self, output) -> Response:
        return Response(content=encode_image(output), media_type="image/png")


@dataclass(frozen=True)
class PeerServerConfig:
    """The peer's flags: which bundle, where, on which backend, and LitServe's batching."""

    bundle: str
    port: int = 8100
    host: str = "127.0.0.1"
    kind: str = "onnxruntime"  # backend kind, as FEWSTEP_BACKEND__KIND (not 'auto')
    precision: str = "auto"
    threads: int | None = None
    max_batch: int = 16
    batch_timeout: float = 0.005


def serve_peer(cfg: PeerServerConfig) -> int:
    """LitServe over the bundle's pipeline, until the process is stopped."""
    settings = {"kind": cfg.kind, "precision": cfg.precision, "threads": cfg.threads}
    api = PipelineAPI(cfg.bundle, settings, cfg.max_batch, cfg.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60)
    server.run(host=cfg.host, port=cfg.port, num_api_servers=1, generate_client_file=False, log_level="warning")
    return 0
