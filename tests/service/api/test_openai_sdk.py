"""POST /v1/images/generations through the official `openai` SDK, against a live uvicorn server.

What a client of OpenAI's API expects of a compatible route: images on success, and for each
failure the SDK exception OpenAI's own API would raise (`BadRequestError` for an invalid
parameter, `AuthenticationError`, `NotFoundError` for an unknown model, `RateLimitError` when the
queue is full), with the parameter at fault in `param`.
"""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
from PIL import Image

from service.app import create_app
from service.fakes import fake_pipeline
from service.pipeline import Pipeline
from service.settings import ServiceSettings
from tests.conftest import require_module
from tests.service.api.conftest import default_pipelines
from tests.service.engine.conftest import GatedDenoiser

openai = require_module("openai", "the `openai` package (dev extra) drives the API as its users do")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live(pipelines: Sequence[Pipeline] | None = None, **settings) -> Iterator[tuple[object, str]]:
    """The app under a real uvicorn in a thread (the SDK speaks HTTP); yields (app, base URL)."""
    import uvicorn

    app = create_app(ServiceSettings(**settings), pipelines or default_pipelines())
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(500):
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.02)
        else:
            raise AssertionError("the live server never became ready")
        yield app, url
    finally:
        server.should_exit = True
        thread.join(30)


def sdk(url: str, key: str = "any") -> openai.OpenAI:
    """The official client, without retries (a retried 429 would hide the refusal under test)."""
    return openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, timeout=30)


def test_the_sdk_gets_images():
    with live() as (_, url):
        result = sdk(url).images.generate(prompt="a red circle", n=2, size="8x8", response_format="b64_json")
        student = sdk(url).images.generate(prompt="a red circle", model="student")
    assert len(result.data) == 2 and result.created > 0
    for item in [*result.data, *student.data]:
        assert Image.open(io.BytesIO(base64.b64decode(item.b64_json))).size == (8, 8)


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "1024x1024"}, "size"),
        ({"size": "big"}, "size"),
        ({"response_format": "url"}, "response_format"),
        ({"n": 20}, "n"),
        ({"n": 0}, "n"),
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"quality": "hd"}, "quality"),
        ({"style": "vivid"}, "style"),
        ({"extra_body": {"seed": 3}}, "seed"),
    ],
)
def test_each_invalid_parameter_is_a_bad_request_error_naming_it(kwargs: dict, param: str):
    with live() as (_, url), pytest.raises(openai.BadRequestError) as caught:
        sdk(url).images.generate(**{"prompt": "a red circle", **kwargs})
    e = caught.value
    assert e.status_code == 400 and e.param == param and e.type == "invalid_request_error", e.body
    assert param in e.message


def test_an_unknown_model_is_openais_not_found():
    with live() as (_, url), pytest.raises(openai.NotFoundError) as caught:
        sdk(url).images.generate(prompt="a red circle", model="dall-e-3")
    assert caught.value.code == "model_not_found" and caught.value.param == "model"


def test_a_missing_or_wrong_key_is_an_authentication_error():
    with live(api_keys="secret") as (_, url):
        with pytest.raises(openai.AuthenticationError) as caught:
            sdk(url, key="wrong").images.generate(prompt="a red circle")
        assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError):
            sdk(url, key="wrong").models.list()
        assert len(sdk(url, key="secret").images.generate(prompt="a red circle").data) == 1
        assert {m.id for m in sdk(url, key="secret").models.list()} == {"fake", "student"}


def test_a_full_queue_is_a_rate_limit_error_with_retry_after(scheduling):
    if scheduling == "step":
        pytest.skip("request-level choreography (see test_errors.test_a_full_queue_is_429_with_retry_after)")
    gated = GatedDenoiser()
    pipelines = [fake_pipeline("fake", gated)]
    with live(pipelines, queue_limit_images=2, max_wait_s=0.0, max_batch_images=1) as (app, url):
        client = sdk(url)
        gated.gate.clear()
        gated.entered.clear()  # warm-up already called the denoiser: only the holder may set it now
        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(client.images.generate, prompt="holder")
            assert gated.entered.wait(10)
            queued = pool.submit(client.images.generate, prompt="queued", n=2)
            engine = app.state.engine
            deadline = time.monotonic() + 30
            while engine.queued_images < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert engine.queued_images == 2, "the second request never reached the queue"
            try:
                with pytest.raises(openai.RateLimitError) as caught:
                    client.images.generate(prompt="refused")
            finally:
                gated.gate.set()
            assert len(holder.result().data) == 1 and len(queued.result().data) == 2
    e = caught.value
    assert e.status_code == 429 and e.code == "queue_full" and int(e.response.headers["retry-after"]) >= 1
