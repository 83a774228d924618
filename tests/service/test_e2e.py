"""End to end: a real `fewstep serve` process (uvicorn) on the default bundles, a real Prometheus
scraping it, promtool on a live scrape, and the playground clicked through in headless Chromium.

Slow (bundles load, the teacher samples on CPU): run with `pytest -m slow tests/service/test_e2e.py`.
Each part skips with its reason when what it needs is missing: the `default_bundles` fixture
(tests/conftest.py, `make bundles`), Debian's `prometheus`/`promtool`/`chromium`
(scripts/install-system-deps.sh), or the `playwright` package (the `dev` extra).
The tests run in file order and share one server; the last one stops it with SIGTERM.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import missing, require_module, require_tool
from tests.defaults import default_model as makefile_default_model
from tests.scoring import evaluation_items, evaluation_set_version, predicted_scenes, served_adherence

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def eval_row(model: dict) -> tuple[str, dict]:
    """The manifest's evaluation row at the model's default steps and guidance (what it serves)."""
    suffix = f"-{model['default_steps']}-w{model['guidance']['default']:g}"
    for key, row in model["evaluation"].items():
        if key.endswith(suffix):
            return key, row
    return suffix, {}


N_REQUESTS = 32


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, timeout_s: float, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited with {proc.returncode} before {url} answered")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} not ready after {timeout_s} s")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout_s: float = 40) -> int:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class Server:
    def __init__(self, proc: subprocess.Popen, url: str, bundles: Path, log: Path) -> None:
        self.proc, self.url, self.bundles, self.log = proc, url, bundles, log


@pytest.fixture(scope="module", params=["request", "step"])
def server(request, tmp_path_factory) -> Iterator[Server]:
    """The server, once per scheduling mode (request-level and step-level batching, issue 5)."""
    try:
        bundles = Path(request.getfixturevalue("default_bundles"))
    except pytest.FixtureLookupError:
        pytest.skip("no `default_bundles` fixture (tests/conftest.py): the e2e test serves the default bundles")
    port = free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    fewstep = Path(sys.executable).parent / "fewstep"
    cmd = [str(fewstep), "serve", "--bundles", str(bundles), "--port", str(port)]
    cmd += ["--max-batch-images", "16", "--max-wait-s", "0.05", "--drain-timeout-s", "30"]
    cmd += ["--scheduling", request.param]
    with log.open("w") as out:
        env = {**os.environ, "FEWSTEP_DEFAULT_MODEL": makefile_default_model()}  # as `make serve` does
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/readyz", 180, proc)
    except AssertionError:
        stop(proc)
        raise AssertionError(log.read_text()[-4000:]) from None
    yield Server(proc, url, bundles, log)
    stop(proc)


@pytest.fixture(scope="module")
def default_model(server: Server) -> dict:
    models = httpx.get(f"{server.url}/v1/models").json()["data"]
    return next(m for m in models if m["id"] == makefile_default_model())


@pytest.fixture(scope="module")
def prometheus(server: Server, tmp_path_factory) -> Iterator[str]:
    """A real Prometheus scraping the service every second; yields its HTTP API address."""
    require_tool("prometheus", "Debian's prometheus scrapes the live service (scripts/install-system-deps.sh)")
    work = tmp_path_factory.mktemp("prometheus")
    target = urllib.parse.urlparse(server.url).netloc
    (work / "prometheus.yml").write_text(
        json.dumps(  # JSON is YAML
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "scrape_configs": [{"job_name": "fewstep", "static_configs": [{"targets": [target]}]}],
            }
        )
    )
    port = free_port()
    cmd = [
        "prometheus",
        f"--config.file={work / 'prometheus.yml'}",
        f"--storage.tsdb.path={work / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with (work / "prometheus.log").open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/-/ready", 60, proc)
        # A scrape of the request histogram before the burst: rate() needs a sample from before the
        # requests it measures, and a labelled series exists only once a request has been served
        # (a burst to a fast model can finish between two scrapes).
        httpx.post(f"{server.url}/generate", json={"prompt": "a red circle", "seed": 0}, timeout=120)
        query = {"query": 'fewstep_http_request_duration_seconds_count{route="/generate"}'}
        for _ in range(100):
            seen = httpx.get(f"{url}/api/v1/query", params=query).json()["data"]["result"]
            if seen:
                break
            time.sleep(0.2)
        yield url
    finally:
        stop(proc, timeout_s=20)


@pytest.fixture(scope="module")
def burst(server: Server, default_model: dict, prometheus_or_none) -> list[tuple[dict, dict]]:
    """32 concurrent requests for the first evaluation prompts with their evaluation seeds."""
    items = evaluation_items(N_REQUESTS)  # in-distribution items, seeds 0..31: the evaluation's own
    _, row = eval_row(default_model)
    steps, guidance = row.get("steps", default_model["default_steps"]), row.get("guidance", 3.0)
    bodies = [
        {
            "prompt": e.item.caption,
            "seed": e.seed,
            "steps": steps,
            "guidance_scale": guidance,
            "model": default_model["id"],
        }
        for e in items
    ]
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(N_REQUESTS) as pool:
        responses = list(pool.map(lambda b: client.post(f"{server.url}/generate", json=b), bodies))
    for r in responses:
        assert r.status_code == 200, r.text
    return [(b, r.json()) for b, r in zip(bodies, responses, strict=True)]


@pytest.fixture(scope="module")
def prometheus_or_none(request, server: Server) -> str | None:
    """Prometheus if it can run, started before the burst so that it scrapes before and after.

    Depends on `server` explicitly: one Prometheus per scheduling mode's server (a dynamic
    `getfixturevalue` alone would keep the first mode's, torn-down, Prometheus)."""
    try:
        return request.getfixturevalue("prometheus")
    except pytest.skip.Exception:
        return None


def test_32_concurrent_requests_all_decode_and_ran_in_batches(burst, server: Server):
    for body, result in burst:
        assert result["seeds"] == [body["seed"]]
        image = Image.open(io.BytesIO(base64.b64decode(result["images"][0]["b64"])))
        image.load()
        assert image.size == (result["width"], result["height"])
    assert max(result["batch_images"] for _, result in burst) > 1
    families = {f.name: f for f in text_string_to_metric_families(httpx.get(f"{server.url}/metrics").text)}
    buckets = {
        s.labels["le"]: s.value for s in families["fewstep_batch_size_images"].samples if s.name.endswith("_bucket")
    }
    assert buckets["+Inf"] > buckets["1.0"], "every batch held one image"


def test_served_adherence_is_within_sampling_error_of_the_manifest(burst, default_model: dict):
    key, row = eval_row(default_model)
    if not row or "adherence" not in row:
        pytest.skip(f"the bundle's manifest has no {key!r} adherence figure")
    version = evaluation_set_version()
    if row.get("eval_set_version", 1) != version:
        pytest.skip(
            f"the manifest's {key!r} row was scored on evaluation set v{row.get('eval_set_version', 1)}, "
            f"the burst uses v{version}: re-export the bundle with a current row (make results-all)"
        )
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(r["images"][0]["b64"]))).convert("RGB")) for _, r in burst]
    )
    served = served_adherence(images, N_REQUESTS)
    expected = row["adherence"]["overall"]
    three_sigma = 3 * math.sqrt(expected * (1 - expected) / N_REQUESTS)
    assert abs(served - expected) <= three_sigma + 1e-9, (served, expected, three_sigma)


def test_prometheus_scrapes_and_answers_a_histogram_quantile(burst, prometheus_or_none):
    if prometheus_or_none is None:
        missing("no `prometheus`: Debian's prometheus scrapes the live service (scripts/install-system-deps.sh)")
    query = (
        "histogram_quantile(0.9, sum by (le) "
        '(rate(fewstep_http_request_duration_seconds_bucket{route="/generate"}[10m])))'
    )
    value = None
    for _ in range(60):
        r = httpx.get(f"{prometheus_or_none}/api/v1/query", params={"query": query}).json()
        result = r.get("data", {}).get("result", [])
        if r.get("status") == "success" and result and result[0]["value"][1] not in ("NaN", "+Inf"):
            value = float(result[0]["value"][1])
            break
        time.sleep(1)
    targets = httpx.get(f"{prometheus_or_none}/api/v1/targets").json()["data"]["activeTargets"]
    assert value is not None and value > 0, f"no quantile from Prometheus: {r}; targets {targets}"


def test_promtool_check_metrics_on_a_live_scrape(burst, server: Server):
    require_tool("promtool", "promtool checks a live scrape (scripts/install-system-deps.sh, package prometheus)")
    scrape = httpx.get(f"{server.url}/metrics").text
    r = subprocess.run(["promtool", "check", "metrics"], input=scrape, capture_output=True, text=True)
    assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), r.stdout + r.stderr


CHROMIUM_REASON = "the pages are clicked through in headless Chromium (scripts/install-system-deps.sh)"

# Chromium with nothing to reach but this machine: no background services, and every other
# address sent to a proxy on a port where nothing listens (loopback bypasses proxies by default).
OFFLINE_CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--proxy-server=http://127.0.0.1:9",
]


def expect(locator: Any) -> Any:
    """Playwright's `expect`, imported when a browser test runs (playwright is a dev extra)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


@contextmanager
def offline_page(server: Server) -> Iterator[tuple[Any, list[str]]]:
    """A headless Chromium page that can reach only the service; yields it with the list of the
    other URLs it tried (each refused: the test asserts the list stays empty)."""
    chromium = require_tool("chromium", CHROMIUM_REASON)
    sync_api = require_module("playwright.sync_api", "playwright (dev extra) drives Chromium")
    elsewhere: list[str] = []

    def only_the_service(route) -> None:
        url = route.request.url
        if url.startswith((server.url + "/", "data:")):
            route.continue_()
        else:
            elsewhere.append(url)
            route.abort("internetdisconnected")

    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=OFFLINE_CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.route("**/*", only_the_service)
            yield page, elsewhere
        finally:
            browser.close()


def test_api_docs_render_in_headless_chromium_with_the_network_blocked(server: Server, tmp_path):
    with offline_page(server) as (page, elsewhere):
        page.goto(server.url + "/docs")
        page.wait_for_selector(".opblock", timeout=60_000)
        operations = page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.textContent)")
        page.screenshot(path=str(tmp_path / "docs.png"))
        page.goto(server.url + "/redoc")
        # A locator, not wait_for_function: a string predicate is eval'd in the page, which the docs'
        # Content-Security-Policy (no 'unsafe-eval') rightly refuses.
        page.get_by_text("/v1/images/generations").first.wait_for(timeout=60_000)
        redoc_text = page.inner_text("body")
    assert {"/generate", "/v1/images/generations", "/v1/models", "/info"} <= {o.strip() for o in operations}
    assert "shapes-world vocabulary" in redoc_text
    assert elsewhere == [], f"the docs tried to reach {elsewhere}"


def test_playground_first_click_with_the_defaults_shows_images(server: Server, default_model: dict, tmp_path):
    """Nothing filled in: the server's default model and prompt, 4 images, each with its seed and timings."""
    import shapesworld as shapes

    with offline_page(server) as (page, elsewhere):
        page.goto(server.url + "/")
        page.wait_for_selector("#model option", state="attached")
        page.wait_for_selector("#examples button.example", state="attached")
        model, prompt = page.input_value("#model"), page.input_value("#prompt")
        vocabulary = page.inner_text("#vocabulary")
        page.click("#generate")
        expect(page.locator("img.result")).to_have_count(4, timeout=120_000)
        widths = page.eval_on_selector_all("img.result", "els => els.map(e => e.naturalWidth)")
        captions = page.eval_on_selector_all("#images figcaption", "els => els.map(e => e.textContent)")
        status, warnings = page.inner_text("#status"), page.inner_text("#warnings")
        page.screenshot(path=str(tmp_path / "playground-defaults.png"))
    assert model == default_model["id"] == makefile_default_model()  # FEWSTEP_DEFAULT_MODEL, as `make serve` sets it
    assert prompt == shapes.EXAMPLE_PROMPTS[0] and shapes.unknown_words(prompt) == []
    assert all(w in vocabulary for w in ("circle", "top left", "white"))
    assert len(widths) == 4 and all(w > 0 for w in widths)
    assert all("seed" in c and "compute" in c and "ms" in c for c in captions), captions
    assert "compute" in status and not warnings.strip()
    assert elsewhere == [], f"the playground tried to reach {elsewhere}"


def test_the_default_model_draws_the_playgrounds_default_prompt_right(server: Server, default_model: dict):
    """The first click should show what was asked: the evaluator checks 8 seeds of the default prompt."""
    import shapesworld as shapes

    info = httpx.get(f"{server.url}/info").json()
    assert info["default_model"] == default_model["id"]
    body = {"prompt": info["default_prompt"], "seed": 0, "n": 8}
    reply = httpx.post(f"{server.url}/generate", json=body, timeout=120).json()
    images = np.stack(
        [np.asarray(Image.open(io.BytesIO(base64.b64decode(i["b64"]))).convert("RGB")) for i in reply["images"]]
    )
    predicted = predicted_scenes(images)
    spec = shapes.parse_prompt(info["default_prompt"])
    right = sum(shapes.satisfies(scene, spec)["all"] for scene in predicted)
    assert reply["warnings"] == [] and right >= 6, f"{right} of 8 images match {info['default_prompt']!r}"


def test_playground_in_headless_chromium(server: Server, tmp_path):
    chromium = require_tool("chromium", CHROMIUM_REASON)
    sync_api = require_module("playwright.sync_api", "playwright (dev extra) drives Chromium")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.goto(server.url + "/")
            page.wait_for_selector("#model option", state="attached")
            page.fill("#prompt", "a green triangle")
            page.fill("#seed", "5")
            page.fill("#n", "2")
            page.click("#generate")
            expect(page.locator("img.result")).to_have_count(2, timeout=60_000)
            widths = page.eval_on_selector_all("img.result", "els => els.map(e => e.naturalWidth)")
            captions = page.inner_text("#images")
            status = page.inner_text("#status")
            page.screenshot(path=str(tmp_path / "playground.png"))
        finally:
            browser.close()
    assert all(w > 0 for w in widths) and "seed 5" in captions and "seed 6" in captions
    assert "compute" in status and "ms" in status


def test_the_serve_log_is_short_and_ends_its_start_with_the_urls(server: Server):
    """Read after the start (the other tests poll /readyz and /metrics: none of that is logged)."""
    lines = server.log.read_text().splitlines()
    ready = [i for i, line in enumerate(lines) if "ready (default model" in line]
    assert ready, "\n".join(lines[-20:])
    line = lines[ready[0]]
    for path in ("/", "/docs", "/metrics"):
        assert f"{server.url}{path} " in line + " ", line
    start = lines[: ready[0] + 1]
    assert len(start) <= 40, "\n".join(start)
    noise = [s for s in lines if '"GET /readyz' in s or '"GET /metrics' in s or "Warning" in s]
    assert noise == [], noise


def test_sigterm_drains_accepted_requests_then_exits(server: Server):
    """Runs last: stops the shared server."""
    body = {"prompt": "a red circle", "model": "teacher", "steps": 64, "n": 4}  # slow enough to be in flight
    with httpx.Client(timeout=120) as client, ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client.post, f"{server.url}/generate", json={**body, "seed": i}) for i in range(6)]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # all six admitted (queued or running) before the signal
            m = client.get(f"{server.url}/metrics").text
            if "fewstep_in_flight_requests 6.0" in m:
                break
            time.sleep(0.02)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.05)
        try:
            late = client.post(f"{server.url}/generate", json={**body, "seed": 99}, timeout=10).status_code
        except httpx.TransportError:
            late = None  # already closed: refused, which is also not admitted
        statuses = [f.result().status_code for f in futures]
    assert statuses == [200] * 6
    assert late in (503, None)
    assert server.proc.wait(60) == 0
