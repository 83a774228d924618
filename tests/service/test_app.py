from fastapi.testclient import TestClient

from service.app import create_app


def test_liveness_and_honest_readiness():
    client = TestClient(create_app())
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 503 and "no model bundles" in r.json()["reason"]
