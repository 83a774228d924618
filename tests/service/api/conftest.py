"""The real app over fake pipelines, through Starlette's TestClient (lifespan included)."""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.fakes import fake_pipeline
from service.pipeline import Pipeline
from service.settings import ServiceSettings


@pytest.fixture(autouse=True, params=["request", "step"])
def scheduling(request, monkeypatch) -> str:
    """Every API test runs under both schedulers: the API must not change with the scheduling mode."""
    monkeypatch.setenv("FEWSTEP_SCHEDULING", request.param)
    return request.param


def default_pipelines() -> list[Pipeline]:
    return [fake_pipeline("fake"), fake_pipeline("student", network_input=True, steps=(1, 2, 4))]


@contextmanager
def serving(pipelines: Sequence[Pipeline] | None = None, **settings) -> Iterator[TestClient]:
    """A started app (warm-up finished, /readyz 200) with the given settings.

    Fixed batch bounds unless a test passes its own (`max_batch_images=None` asks for the profile):
    the warm-up cost profile takes 3-4 s per app on a CI core, the API tests do not test it, and
    there are about 200 of them (the profile has its own tests, tests/service/engine)."""
    settings.setdefault("max_batch_images", 8)
    settings.setdefault("max_wait_s", 0.0)
    app = create_app(ServiceSettings(**settings), pipelines or default_pipelines())
    with TestClient(app, raise_server_exceptions=False) as client:
        # Warm-up (and a profile, where asked for) can take seconds on a loaded 2-core machine.
        deadline = time.monotonic() + 120
        while client.get("/readyz").status_code != 200:
            if time.monotonic() > deadline:
                raise AssertionError("the app never became ready")
            time.sleep(0.01)
        yield client


def assert_error(response, status: int, param: str | None = None, code: str | None = None) -> dict:
    """The response is our JSON error shape with this status (and param/code when given)."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in error["message"]
    if param is not None:
        assert error["param"] == param, error
    if code is not None:
        assert error["code"] == code, error
    return error
