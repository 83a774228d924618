"""POST /v1/images/generations: OpenAI's request subset, response shape and error shape."""

from __future__ import annotations

import base64
import io

import pytest
from PIL import Image

from tests.service.api.conftest import assert_error, serving


def test_b64_json_images_in_openai_shape():
    with serving() as client:
        r = client.post("/v1/images/generations", json={"prompt": "a red circle", "n": 2, "size": "8x8"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"created", "data"} and isinstance(body["created"], int)
    assert len(body["data"]) == 2
    for item in body["data"]:
        assert Image.open(io.BytesIO(base64.b64decode(item["b64_json"]))).size == (8, 8)


def test_model_and_user_fields_are_accepted():
    with serving() as client:
        r = client.post("/v1/images/generations", json={"prompt": "p", "model": "student", "user": "u1"})
    assert r.status_code == 200 and len(r.json()["data"]) == 1


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": "p", "size": "1024x1024"}, 400, "size"),
        ({"prompt": "p", "size": "big"}, 400, "size"),
        ({"prompt": "p", "response_format": "url"}, 400, "response_format"),
        ({"prompt": "p", "n": 20}, 400, "n"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": "p", "quality": "hd"}, 400, "quality"),
        ({"n": 1}, 400, "prompt"),
        ({"prompt": "p", "model": "dall-e-3"}, 404, "model"),
    ],
)
def test_errors_have_openais_status_and_shape_and_name_the_param(body: dict, status: int, param: str):
    with serving() as client:
        error = assert_error(client.post("/v1/images/generations", json=body), status, param=param)
    assert error["type"] == "invalid_request_error"


def test_a_missing_key_is_openais_401():
    with serving(api_keys="secret") as client:
        error = assert_error(client.post("/v1/images/generations", json={"prompt": "p"}), 401)
        ok = client.post("/v1/images/generations", json={"prompt": "p"}, headers={"Authorization": "Bearer secret"})
    assert error["code"] == "invalid_api_key" and ok.status_code == 200


def test_a_body_that_is_not_json_is_openais_400():
    with serving() as client:
        r = client.post("/v1/images/generations", content=b"{nope", headers={"content-type": "application/json"})
    assert assert_error(r, 400)["type"] == "invalid_request_error"


def test_unknown_prompt_words_come_back_in_a_header_and_the_body_keeps_openais_shape():
    with serving() as client:
        r = client.post("/v1/images/generations", json={"prompt": "a red dragon"})
        clean = client.post("/v1/images/generations", json={"prompt": "a red circle"})
    assert r.status_code == 200 and set(r.json()) == {"created", "data"}
    assert "dragon" in r.headers["x-fewstep-warning"]
    assert "x-fewstep-warning" not in clean.headers
