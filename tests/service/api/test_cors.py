"""FEWSTEP_CORS_ORIGINS (service.app.add_cors): off when unset; a preflight from a listed origin is
allowed, one from any other origin is refused and gets no CORS headers."""

from __future__ import annotations

import pytest

from tests.service.api.conftest import serving

ALLOWED = "https://app.example"
PREFLIGHT = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization, content-type"}


def test_without_the_setting_there_are_no_cors_headers_and_no_preflight_route():
    with serving() as client:
        preflight = client.options("/generate", headers={"Origin": ALLOWED, **PREFLIGHT})
        plain = client.get("/v1/models", headers={"Origin": ALLOWED})
    assert preflight.status_code == 405  # the app's own answer: nothing handles OPTIONS
    assert not any(h.lower().startswith("access-control-") for h in preflight.headers)
    assert plain.status_code == 200 and "access-control-allow-origin" not in plain.headers


def test_a_preflight_from_a_listed_origin_is_allowed_with_the_key_headers():
    with serving(cors_origins=[ALLOWED]) as client:
        r = client.options("/generate", headers={"Origin": ALLOWED, **PREFLIGHT})
        reply = client.post("/generate", json={"prompt": "a red circle", "seed": 1}, headers={"Origin": ALLOWED})
    assert r.status_code == 200, r.text
    assert r.headers["access-control-allow-origin"] == ALLOWED
    assert {"POST", "GET"} <= {m.strip() for m in r.headers["access-control-allow-methods"].split(",")}
    allowed_headers = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"authorization", "content-type"} <= allowed_headers
    assert "access-control-allow-credentials" not in r.headers  # keys go in headers, never cookies
    assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == ALLOWED
    exposed = {h.strip().lower() for h in reply.headers["access-control-expose-headers"].split(",")}
    assert {"x-compute-seconds", "x-fewstep-warning", "retry-after"} <= exposed


@pytest.mark.parametrize("origin", ["https://evil.example", "http://app.example", "https://app.example:8443"])
def test_a_preflight_from_any_other_origin_is_refused(origin: str):
    with serving(cors_origins=[ALLOWED]) as client:
        r = client.options("/generate", headers={"Origin": origin, **PREFLIGHT})
        reply = client.get("/v1/models", headers={"Origin": origin})
    assert r.status_code == 400
    assert "access-control-allow-origin" not in r.headers
    # a simple request still runs (CORS is the browser's rule), but the browser may not read it
    assert reply.status_code == 200 and "access-control-allow-origin" not in reply.headers


def test_a_preflight_asking_for_a_method_the_api_has_not_is_refused():
    with serving(cors_origins=[ALLOWED]) as client:
        r = client.options("/generate", headers={"Origin": ALLOWED, "Access-Control-Request-Method": "DELETE"})
    assert r.status_code == 400


def test_any_origin_with_a_star():
    with serving(cors_origins=["*"]) as client:
        r = client.options("/generate", headers={"Origin": "https://anyone.example", **PREFLIGHT})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
