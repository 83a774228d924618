"""POST /generate, GET /v1/models, the probes and the playground, through the real app."""

from __future__ import annotations

import base64
import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from service.fakes import FakeDenoiser, fake_pipeline
from tests.service.api.conftest import assert_error, serving


def decode(b64: str) -> Image.Image:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    image.load()
    return image


def test_generate_returns_images_seeds_timings_and_the_model_defaults():
    with serving() as client:
        r = client.post("/generate", json={"prompt": "a red circle", "n": 3, "seed": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["seeds"] == [10, 11, 12] and [i["seed"] for i in body["images"]] == [10, 11, 12]
    assert (body["model"], body["steps"], body["guidance_scale"]) == ("fake", 4, 3.0)
    assert (body["width"], body["height"], body["output_format"]) == (8, 8, "png")
    assert all(decode(i["b64"]).size == (8, 8) for i in body["images"])
    t = body["timings"]
    assert 0 <= t["queue_s"] <= t["total_s"] and t["compute_s"] > 0
    assert body["batch_images"] == 3


def test_a_seed_is_chosen_and_returned_when_none_is_given():
    with serving() as client:
        body = client.post("/generate", json={"prompt": "p", "n": 2}).json()
    assert body["seeds"][1] == body["seeds"][0] + 1


def test_accept_png_with_one_image_returns_the_png_itself_with_its_seed():
    with serving() as client:
        raw = client.post("/generate", json={"prompt": "p", "seed": 3}, headers={"Accept": "image/png"})
        as_json = client.post("/generate", json={"prompt": "p", "seed": 3}).json()
    assert raw.status_code == 200 and raw.headers["content-type"] == "image/png"
    assert raw.headers["x-seed"] == "3" and float(raw.headers["x-total-seconds"]) > 0
    assert raw.content == base64.b64decode(as_json["images"][0]["b64"])


@pytest.mark.parametrize(("fmt", "pil"), [("jpeg", "JPEG"), ("webp", "WEBP"), ("png", "PNG")])
def test_output_formats(fmt: str, pil: str):
    with serving() as client:
        body = client.post("/generate", json={"prompt": "p", "seed": 1, "output_format": fmt}).json()
    assert decode(body["images"][0]["b64"]).format == pil


def test_a_request_gives_byte_identical_png_alone_and_inside_a_batch():
    slow = FakeDenoiser(delay_s=0.02)
    target = {"prompt": "the same prompt", "seed": 99, "n": 2, "guidance_scale": 4.5, "steps": 8}
    with serving([fake_pipeline("fake", slow)], max_wait_s=0.2) as client:
        alone = client.post("/generate", json=target).json()
        others = [
            {"prompt": f"other {i}", "seed": i, "n": 1 + i % 2, "guidance_scale": 1.0 + i, "steps": 8} for i in range(4)
        ]
        with ThreadPoolExecutor(5) as pool:
            futures = [pool.submit(client.post, "/generate", json=b) for b in [*others[:2], target, *others[2:]]]
            batched = futures[2].result().json()
            assert all(f.result().status_code == 200 for f in futures)
    assert alone["batch_images"] == 2 and batched["batch_images"] > 2
    assert [i["b64"] for i in batched["images"]] == [i["b64"] for i in alone["images"]]


def test_models_lists_each_bundle_with_steps_guidance_and_resolution():
    with serving() as client:
        body = client.get("/v1/models").json()
    assert body["object"] == "list"
    cards = {m["id"]: m for m in body["data"]}
    assert cards["fake"]["steps"] == [4, 8] and cards["fake"]["default_steps"] == 4
    assert cards["student"]["guidance"]["network_input"] is True
    assert cards["student"]["resolution"] == 8 and cards["student"]["object"] == "model"


def test_the_request_model_picks_the_bundle():
    with serving() as client:
        body = client.post("/generate", json={"prompt": "p", "model": "student", "steps": 2}).json()
    assert (body["model"], body["steps"]) == ("student", 2)


def test_default_model_setting():
    with serving(default_model="student") as client:
        assert client.post("/generate", json={"prompt": "p"}).json()["model"] == "student"


def test_probes_docs_and_playground():
    with serving() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz").json()
        assert ready["status"] == "ready" and ready["models"] == ["fake", "student"]
        paths = client.get("/openapi.json").json()["paths"]
        assert {"/generate", "/v1/images/generations", "/v1/models"} <= set(paths)
        assert client.get("/docs").status_code == 200
        page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'id="generate"' in page.text and "/generate" in page.text


def test_readiness_is_503_until_the_bundles_are_loaded():
    from fastapi.testclient import TestClient

    from service.app import create_app
    from service.settings import ServiceSettings

    client = TestClient(create_app(ServiceSettings(), [fake_pipeline()]))  # lifespan not started
    r = client.get("/readyz")
    assert r.status_code == 503 and "loading" in r.json()["reason"]
    assert client.get("/healthz").status_code == 200
    assert_error(client.post("/generate", json={"prompt": "p"}), 503)


def test_prompt_words_outside_the_vocabulary_are_warned_about_not_refused():
    import shapesworld as shapes

    with serving() as client:
        r = client.post("/generate", json={"prompt": "a red dragon under a tree", "seed": 1})
        raw = client.post("/generate", json={"prompt": "a red dragon"}, headers={"Accept": "image/png"})
        clean = client.post("/generate", json={"prompt": shapes.EXAMPLE_PROMPTS[0]})
    assert r.status_code == 200 and len(r.json()["images"]) == 1
    (warning,) = r.json()["warnings"]
    assert "dragon" in warning and "tree" in warning and "red" not in warning.split(":")[-1]
    assert "dragon" in r.headers["x-fewstep-warning"]
    assert raw.status_code == 200 and "dragon" in raw.headers["x-fewstep-warning"]
    assert clean.json()["warnings"] == [] and "x-fewstep-warning" not in clean.headers


def test_a_vocabulary_word_the_model_is_not_measured_to_draw_is_warned_about_with_its_canonical_word():
    """'crimson' is a word of the shapes world, but the served models draw it (measured) like noise:
    the warning names it and the word the model does draw."""
    import shapesworld as shapes
    from shapesworld.measured_vocabulary import alternatives

    listed = shapes.listed_vocabulary("fake")  # not a measured model: the words every measured model draws
    unlisted = [x for x in alternatives() if x.word not in listed[x.category] and x.category == "colours"]
    if not unlisted:
        pytest.skip("every colour word is listed for every measured model")
    x = unlisted[0]
    kept = next((w for w in listed["colours"] if shapes.canonical_of(w) != w), None)
    with serving() as client:
        body = client.post("/generate", json={"prompt": f"a {x.word} circle", "seed": 1}).json()
        fine = client.post("/generate", json={"prompt": f"a {kept or 'red'} circle", "seed": 1}).json()
        openai = client.post("/v1/images/generations", json={"prompt": f"a {x.word} circle"})
    (warning,) = body["warnings"]
    assert f"{x.word} (write '{x.canonical}')" in warning
    assert fine["warnings"] == []  # a listed synonym (where one is) is not warned about
    assert x.word in openai.headers["x-fewstep-warning"]


def test_a_warning_header_stays_ascii_whatever_the_prompt():
    with serving() as client:
        r = client.post("/generate", json={"prompt": "a red circle ☃ naïve"})
    assert r.status_code == 200
    r.headers["x-fewstep-warning"].encode("ascii")


def test_info_gives_the_default_model_the_vocabulary_and_prompts_that_work():
    import shapesworld as shapes

    with serving(default_model="student") as client:
        info = client.get("/info").json()
    assert info["default_model"] == "student" and info["models"] == ["fake", "student"]
    # the measured listing (shapesworld/measured_vocabulary.json) of the default model; "student" is not a
    # measured model, so it gets the words every measured model draws
    assert info["vocabulary"] == shapes.listed_vocabulary("student")
    assert all(w in info["vocabulary"][c] for c, words in shapes.canonical_words().items() for w in words)
    assert info["example_prompts"] == list(shapes.EXAMPLE_PROMPTS)
    assert info["default_prompt"] in info["example_prompts"]
    assert shapes.unknown_words(info["default_prompt"]) == []
    assert len(shapes.parse_prompt(info["default_prompt"]).objects) == 1  # one object: what models get right


def test_models_report_the_default_the_export_time_and_a_clean_provenance():
    from datetime import UTC, datetime

    exported = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
    teacher = fake_pipeline("teacher")
    teacher.manifest = teacher.manifest.model_copy(
        update={
            "exported_at": exported,
            "source": {"weights_sha256": "ab" * 32, "git_sha": "c626-dirty", "train_step": 6500},
            "evaluation": {"ancestral-4-w3": {"fd": 1.0, "git_sha": "f091-dirty"}},
        }
    )
    with serving([teacher, fake_pipeline("student")], default_model="teacher") as client:
        cards = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
    card = cards["teacher"]
    assert card["created"] == int(exported.timestamp()) and card["default"] is True
    assert cards["student"]["default"] is False and cards["student"]["created"] == 0
    assert card["provenance"] == {
        "weights_sha256": "ab" * 32,
        "git_sha": "c626",
        "train_step": 6500,
        "exported_at": exported.isoformat(),
    }
    assert card["evaluation"]["ancestral-4-w3"] == {"fd": 1.0, "git_sha": "f091"}
    assert "dirty" not in str(cards)


def test_the_playground_asks_the_server_for_its_defaults():
    with serving() as client:
        page = client.get("/").text
    assert "/info" in page and "default_model" in page and "example_prompts" in page


def test_the_handlers_are_importable_and_mount_alone():
    """Each handler is a module-level function of the request: one can be mounted and called by itself."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from service.api import routes

    card = routes.model_card(fake_pipeline("solo", network_input=True, steps=(1, 2)), default=True)
    assert (card.id, card.default, card.steps, card.guidance["network_input"]) == ("solo", True, [1, 2], True)
    app = FastAPI()
    app.add_api_route("/readyz", routes.readyz)
    app.state.engine = None
    with TestClient(app) as client:
        r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["reason"] == "loading model bundles"
