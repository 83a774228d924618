"""Every error path of the API is JSON in one shape, names the field at fault, and is counted."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.fakes import FakeDenoiser, fake_pipeline
from tests.service.api.conftest import assert_error, serving
from tests.service.engine.conftest import GatedDenoiser


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": ""}, "prompt"),
        ({"prompt": "x" * 1001}, "prompt"),
        ({"prompt": "p", "n": 9}, "n"),
        ({"prompt": "p", "n": 0}, "n"),
        ({"prompt": "p", "steps": 3}, "steps"),
        ({"prompt": "p", "guidance_scale": 9.5}, "guidance_scale"),
        ({"prompt": "p", "width": 64}, "width"),
        ({"prompt": "p", "height": 16}, "height"),
        ({"prompt": "p", "seed": -1}, "seed"),
        ({"prompt": "p", "seed": True}, "seed"),
        ({"prompt": "p", "n": "2"}, "n"),
        ({"prompt": "p", "guidance_scale": False}, "guidance_scale"),
        ({"prompt": "p", "output_format": "gif"}, "output_format"),
        ({"prompt": "p", "guidance": 9.5}, "guidance_scale"),
        ({"prompt": "p", "colour": "red"}, "colour"),
        ({"prompt": "p", "model": "student", "negative_prompt": "blur"}, "negative_prompt"),
        ({"n": 1}, "prompt"),
    ],
)
def test_invalid_fields_are_422_naming_the_field(body: dict, param: str):
    with serving() as client:
        error = assert_error(client.post("/generate", json=body), 422, param=param)
    assert param in error["message"]


def test_a_wrong_size_says_which_size_exists():
    with serving() as client:
        error = assert_error(client.post("/generate", json={"prompt": "p", "width": 64}), 422, param="width")
    assert "8x8" in error["message"]


def test_a_body_that_is_not_json_is_400():
    with serving() as client:
        r = client.post("/generate", content=b"{nope", headers={"content-type": "application/json"})
        metrics = client.get("/metrics").text
    assert "not valid JSON" in assert_error(r, 400)["message"]
    assert 'fewstep_requests_rejected_total{reason="invalid"} 1.0' in metrics


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
@pytest.mark.parametrize("path", ["/generate", "/v1/images/generations"])
def test_a_body_sent_as_another_content_type_is_415_naming_json(content_type: str | None, path: str):
    headers = {"content-type": content_type} if content_type else {}
    with serving() as client:
        r = client.post(path, content=b'{"prompt": "a red circle"}', headers=headers)
    error = assert_error(r, 415, code="unsupported_media_type")
    assert "Content-Type: application/json" in error["message"]


def test_json_with_a_charset_or_a_json_suffix_is_accepted():
    with serving() as client:
        for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
            r = client.post("/generate", content=b'{"prompt": "p"}', headers={"content-type": content_type})
            assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    ("field", "suggestion"),
    [("guidance_scal", "guidance_scale"), ("sede", "seed"), ("negative", "negative_prompt"), ("num", "n")],
)
def test_an_unknown_field_suggests_the_closest_known_one(field: str, suggestion: str):
    with serving() as client:
        error = assert_error(client.post("/generate", json={"prompt": "p", field: 1}), 422, param=field)
    assert f"did you mean {suggestion!r}" in error["message"] or suggestion in error["message"]


def test_an_unknown_field_with_no_close_name_lists_the_fields():
    with serving() as client:
        error = assert_error(client.post("/generate", json={"prompt": "p", "xyzzy": 1}), 422, param="xyzzy")
    assert "guidance_scale" in error["message"] and "prompt" in error["message"]


def test_accept_png_with_several_images_is_406_saying_how_to_get_them():
    with serving() as client:
        r = client.post("/generate", json={"prompt": "p", "n": 3}, headers={"Accept": "image/png"})
        error = assert_error(r, 406, param="n", code="not_acceptable")
        assert "application/json" in error["message"]
        # A client that also takes JSON (or anything) gets the JSON reply with all the images.
        for accept in ("image/png, application/json", "image/png, */*"):
            ok = client.post("/generate", json={"prompt": "p", "n": 3}, headers={"Accept": accept})
            assert ok.status_code == 200 and len(ok.json()["images"]) == 3


def test_unknown_model_is_404_naming_the_loaded_ones():
    with serving() as client:
        error = assert_error(client.post("/generate", json={"prompt": "p", "model": "nope"}), 404, "model")
    assert error["code"] == "model_not_found" and "'fake'" in error["message"]


def test_unknown_route_and_wrong_method_are_json():
    with serving() as client:
        assert_error(client.get("/nowhere"), 404)
        assert_error(client.get("/generate"), 405)


def test_a_full_queue_is_429_with_retry_after(scheduling):
    if scheduling == "step":
        # The queue bound is checked in Engine.generate before either scheduler sees a request (one
        # code path); this test's choreography (a gated batch holding the runner while the queue
        # fills) holds only in request mode: in step mode the loop admits between iterations.
        pytest.skip("request-level choreography; the queue bound is scheduler-independent code")
    gated = GatedDenoiser()
    # One batch slot, so that "queued" waits in the queue in step-level mode as well.
    with serving([fake_pipeline("fake", gated)], queue_limit_images=2, max_wait_s=0.0, max_batch_images=1) as client:
        gated.gate.clear()
        gated.entered.clear()  # warm-up already called the denoiser: only the holder may set it now
        with ThreadPoolExecutor(2) as pool:
            holder = pool.submit(client.post, "/generate", json={"prompt": "holder", "seed": 0})
            assert gated.entered.wait(5)
            queued = pool.submit(client.post, "/generate", json={"prompt": "queued", "seed": 0, "n": 2})
            engine = client.app.state.engine
            deadline = time.monotonic() + 30  # a loaded CI machine can take seconds to schedule the POST
            while engine.queued_images < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert engine.queued_images == 2, "the second request never reached the queue"
            refused = client.post("/generate", json={"prompt": "refused", "seed": 0})
            gated.gate.set()
            assert holder.result().status_code == 200 and queued.result().status_code == 200
    assert_error(refused, 429, code="queue_full")
    assert int(refused.headers["retry-after"]) >= 1


def test_past_the_deadline_is_504():
    slow = FakeDenoiser(delay_s=0.1)  # 4 steps: about 0.4 s a batch
    with serving([fake_pipeline("fake", slow)], request_timeout_s=0.15) as client:
        r = client.post("/generate", json={"prompt": "p"})
        assert_error(r, 504, code="timeout")
        assert client.get("/readyz").status_code == 200


def test_a_backend_error_is_a_500_for_that_batch_only_and_the_service_stays_ready():
    gated = GatedDenoiser()
    with serving([fake_pipeline("fake", gated)]) as client:
        gated.fail = True
        error = assert_error(client.post("/generate", json={"prompt": "p"}), 500)
        assert "backend" in error["message"]
        assert client.get("/readyz").status_code == 200
        assert client.post("/generate", json={"prompt": "p"}).status_code == 200


def test_draining_is_503_for_new_requests_and_readiness():
    with serving() as client:
        client.app.state.engine.begin_drain()
        assert_error(client.post("/generate", json={"prompt": "p"}), 503, code="draining")
        r = client.get("/readyz")
        assert r.status_code == 503 and "draining" in r.json()["reason"]


def test_an_unexpected_exception_is_a_json_500_without_its_traceback():
    with serving() as client:

        async def broken(request):
            raise KeyError("internal detail")

        client.app.state.engine.generate = broken
        error = assert_error(client.post("/generate", json={"prompt": "p"}), 500)
    assert error["message"] == "internal server error"


def test_concurrent_refusals_do_not_break_the_next_request():
    with serving() as client:
        with ThreadPoolExecutor(4) as pool:
            bad = list(pool.map(lambda i: client.post("/generate", json={"prompt": "p", "steps": 3}), range(8)))
        assert {r.status_code for r in bad} == {422}
        assert client.post("/generate", json={"prompt": "p"}).status_code == 200
