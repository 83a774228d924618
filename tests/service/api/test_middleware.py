"""The pure ASGI middleware (service.api.middleware): the body size limit."""

from __future__ import annotations

from tests.service.api.conftest import assert_error, serving


def test_an_oversized_body_is_413_by_length_and_by_stream():
    with serving(max_body_bytes=2048) as client:
        assert_error(client.post("/generate", json={"prompt": "p", "pad": "x" * 4000}), 413, code="request_too_large")

        def chunks():
            for _ in range(10):
                yield b"x" * 500

        assert_error(client.post("/generate", content=chunks()), 413)
        metrics = client.get("/metrics").text
    assert 'fewstep_requests_rejected_total{reason="too_large"} 2.0' in metrics
