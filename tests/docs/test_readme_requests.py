"""The first requests the README and the serving guide show run as written against the real app
(over fake backends): the curl body, the OpenAI SDK example and the plain Python example."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.fakes import fake_pipeline
from service.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[2]
PAGES = ("README.md", "docs/guides/serving.md")
SERVED_AT = "http://127.0.0.1:8000"
PNG = b"\x89PNG\r\n\x1a\n"


def code_blocks(page: str, language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", (ROOT / page).read_text(), re.S)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    pipelines = [
        fake_pipeline("mm-alt-k8", steps=(8,), network_input=True),
        fake_pipeline("pd-k4", steps=(4,), network_input=True),
        fake_pipeline("teacher", steps=(16,)),
    ]
    settings = ServiceSettings(default_model="mm-alt-k8", max_batch_images=8, max_wait_s=0.0)
    with TestClient(create_app(settings, pipelines), raise_server_exceptions=False) as c:
        deadline = time.monotonic() + 120
        while c.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the app never became ready"
            time.sleep(0.01)
        yield c


@pytest.mark.parametrize("page", PAGES)
def test_the_curl_request(page: str, client: TestClient) -> None:
    curls = [b for b in code_blocks(page, "sh") if b.lstrip().startswith("curl")]
    assert curls, f"{page} shows no curl request"
    body = json.loads(re.search(r"-d '(\{.*?\})'", curls[0], re.S).group(1))
    r = client.post("/generate", json=body, headers={"Accept": "image/png"})
    assert r.status_code == 200, r.text
    assert r.content.startswith(PNG) and r.headers["x-seed"] == str(body["seed"])


def _run(code: str, where: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(where)
    # the page's own example, as a reader runs it
    exec(compile(code, "<docs example>", "exec"), {"__name__": "docs_example"})


@pytest.mark.parametrize("page", PAGES)
def test_the_openai_sdk_example(page: str, client: TestClient, tmp_path: Path, monkeypatch) -> None:
    openai = pytest.importorskip("openai")
    [example] = [b for b in code_blocks(page, "python") if "from openai import OpenAI" in b]
    real = openai.OpenAI

    def local(**kw):  # the example's client, talking to the app in this process
        assert kw.pop("base_url") == f"{SERVED_AT}/v1"
        return real(**kw, base_url="http://testserver/v1", http_client=client, max_retries=0)

    monkeypatch.setattr(openai, "OpenAI", local)
    _run(example, tmp_path, monkeypatch)
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["image-0.png", "image-1.png"]
    assert all((tmp_path / name).read_bytes().startswith(PNG) for name in written)


@pytest.mark.parametrize("page", PAGES)
def test_the_plain_python_example(page: str, client: TestClient, tmp_path: Path, monkeypatch) -> None:
    [example] = [b for b in code_blocks(page, "python") if "httpx.post" in b]

    def post(url: str, **kw):
        assert url.startswith(SERVED_AT)
        return client.post(url.removeprefix(SERVED_AT), **kw)

    monkeypatch.setattr(httpx, "post", post)
    _run(example, tmp_path, monkeypatch)
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == ["10.png", "7.png", "8.png", "9.png"]  # n = 4 from seed 7: seeds 7, 8, 9, 10
