"""The request bodies (service.api.schemas): the `guidance` alias and the OpenAPI descriptions."""

from __future__ import annotations

from tests.service.api.conftest import assert_error, serving


def test_guidance_is_another_name_of_guidance_scale():
    with serving() as client:
        body = client.post("/generate", json={"prompt": "p", "guidance": 4.5, "seed": 1}).json()
        same = client.post("/generate", json={"prompt": "p", "guidance_scale": 4.5, "seed": 1}).json()
        both = client.post("/generate", json={"prompt": "p", "guidance": 4.5, "guidance_scale": 4.5})
    assert body["guidance_scale"] == 4.5 and body["images"] == same["images"]
    assert "not both" in assert_error(both, 422)["message"]


def test_the_openapi_description_of_the_prompt_lists_the_words_every_model_draws():
    import shapesworld as shapes

    with serving() as client:
        schemas = client.get("/openapi.json").json()["components"]["schemas"]
    for name in ("GenerateBody", "OpenAIImageBody"):
        description = schemas[name]["properties"]["prompt"]["description"]
        for words in shapes.canonical_words().values():
            assert all(w in description for w in words), (name, words)
        assert "crimson" not in description  # a held-out word no model was trained on
    assert "guidance" in schemas["GenerateBody"]["properties"]["guidance_scale"]["description"]
