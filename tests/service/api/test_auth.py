"""API keys (service.api.auth): who gets a 401, and a key check that takes the same time for every key."""

from __future__ import annotations

from tests.service.api.conftest import assert_error, serving


def test_auth_401_without_or_with_a_wrong_key_and_200_with_one():
    with serving(api_keys="k1,k2") as client:
        assert_error(client.post("/generate", json={"prompt": "p"}), 401, code="invalid_api_key")
        bad = client.post("/generate", json={"prompt": "p"}, headers={"Authorization": "Bearer nope"})
        assert_error(bad, 401)
        assert bad.headers["www-authenticate"] == "Bearer"
        assert_error(client.get("/v1/models"), 401)
        ok = client.post("/generate", json={"prompt": "p"}, headers={"Authorization": "Bearer k2"})
        assert ok.status_code == 200
        assert client.post("/generate", json={"prompt": "p"}, headers={"X-API-Key": "k1"}).status_code == 200
        assert client.get("/healthz").status_code == 200 and client.get("/metrics").status_code == 200
        metrics = client.get("/metrics").text
    assert 'fewstep_requests_rejected_total{reason="unauthorized"} 3.0' in metrics


def test_the_key_check_compares_every_key_in_constant_time(monkeypatch):
    import hmac

    from service.api.auth import KeyChecker

    calls = []
    real = hmac.compare_digest

    def spy(a, b):
        calls.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    checker = KeyChecker(["short", "a-much-longer-key"])
    assert checker.matches("short") and not checker.matches("x")
    assert calls == [(32, 32)] * 4  # both keys each time, as equal-length digests, no early exit


def test_a_key_counts_only_as_a_bearer_token_or_an_x_api_key():
    import asyncio

    from starlette.requests import Request

    from service.api.auth import KeyChecker
    from service.api.errors import ApiError

    def request(**headers):
        raw = [(k.replace("_", "-").lower().encode(), v.encode()) for k, v in headers.items()]
        return Request({"type": "http", "method": "POST", "path": "/", "headers": raw})

    checker = KeyChecker(["k1"])
    assert checker.enabled and not KeyChecker([]).enabled
    asyncio.run(checker(request(authorization="Bearer k1")))
    asyncio.run(checker(request(authorization="bearer  k1 ")))
    asyncio.run(checker(request(x_api_key="k1")))
    asyncio.run(KeyChecker([])(request()))  # no keys configured: open
    for headers in ({"authorization": "Basic k1"}, {"authorization": "k1"}, {"x_api_key": "k2"}, {}):
        try:
            asyncio.run(checker(request(**headers)))
        except ApiError as e:
            assert e.status == 401, headers
        else:
            raise AssertionError(f"{headers} was let in")
