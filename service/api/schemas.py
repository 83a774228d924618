"""Request and response bodies of the HTTP API (they are also the OpenAPI schema at /docs).

Requests forbid unknown fields, so a misspelt field is an error naming it (with the closest known
name, see `service.api.errors`) instead of a silently ignored option. `guidance` is accepted as
another name of `guidance_scale`, because the CLI flag is `--guidance` and the playground's label
"Guidance": one concept, whichever name a client reaches for. Limits that depend on the loaded
model (steps, guidance range, size) are checked by the engine against the bundle's manifest, and
come back as errors naming the same fields. Numbers are strict: pydantic's lax mode would read
JSON `true` as 1 and `"4"` as 4, which the OpenAPI schema (and a schema-driven client) calls invalid.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

import shapesworld as shapes
from fewstep.rng import MAX_SEED

MAX_PROMPT_CHARS = 1000
MAX_IMAGES = 8
DEFAULT_PROMPT = shapes.EXAMPLE_PROMPTS[0]  # one object: what every default model draws right

OutputFormat = Literal["png", "jpeg", "webp"]
Quality = Literal["auto", "best", "fast"]

QUALITY_DESCRIPTION = (
    "How the service may trade quality for latency (docs/slo.md): `auto` (the default when the deployment "
    "sets a latency objective) serves the model asked for, or under load a cheaper model of the same family "
    "predicted to finish within the objective, giving up least where the prompt loses least; `best` never "
    "moves the request (it may wait, or get 429); `fast` takes the cheapest model. The reply says which "
    "model and steps served it and why (`routing`, X-Fewstep-* headers)."
)

# Other names a request may use for a field: {alias: field}.
FIELD_ALIASES = {"guidance": "guidance_scale"}


def vocabulary_markdown() -> str:
    """The canonical words as one Markdown line per category (for the OpenAPI descriptions): every
    model draws them; the other words a model draws are measured (`GET /info`), and reading that
    file is left to the app, not to this module's import."""
    return "\n".join(f"- {category}: {', '.join(words)}" for category, words in shapes.canonical_words().items())


PROMPT_DESCRIPTION = (
    "What to draw, in the shapes-world vocabulary the models were trained on: one or two coloured "
    "shapes, each with an optional size and position, and an optional background, e.g. "
    f"{DEFAULT_PROMPT!r}. Words outside the vocabulary are not refused, but the model draws noise "
    "for them; the reply names them in `warnings` and the `X-Fewstep-Warning` header.\n\n"
    "Vocabulary (the words every model draws; GET /info lists, as JSON, every word the default model "
    "draws, synonyms included):\n" + vocabulary_markdown()
)


def _resolve_aliases(data: Any) -> Any:
    """`guidance` -> `guidance_scale`; giving both is an error rather than a silent choice."""
    if not isinstance(data, dict):
        return data
    for alias, field in FIELD_ALIASES.items():
        if alias in data:
            if field in data:
                raise ValueError(f"give {field!r} or its other name {alias!r}, not both")
            data = {**data, field: data[alias]}
            del data[alias]
    return data


class GenerateBody(BaseModel):
    """POST /generate."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(
        min_length=1, max_length=MAX_PROMPT_CHARS, examples=[DEFAULT_PROMPT], description=PROMPT_DESCRIPTION
    )
    negative_prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="teachers only: what the guidance steers away from"
    )
    model: str | None = Field(None, description="a model from GET /v1/models; default: the service's default model")
    n: int = Field(1, ge=1, le=MAX_IMAGES, strict=True, description="images of this prompt; image j uses seed + j")
    steps: int | None = Field(
        None, ge=1, strict=True, description="a step count the model supports; default: its recommended"
    )
    guidance_scale: float | None = Field(
        None,
        ge=0,
        strict=True,
        description="within the model's range; default: its default. Also accepted as `guidance`",
    )
    seed: int | None = Field(
        None, ge=0, le=MAX_SEED - MAX_IMAGES, strict=True, description="default: random; always returned"
    )
    width: int | None = Field(None, ge=1, strict=True, description="must equal the model's resolution")
    height: int | None = Field(None, ge=1, strict=True, description="must equal the model's resolution")
    output_format: OutputFormat = "png"
    quality: Quality | None = Field(None, description=QUALITY_DESCRIPTION)

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return _resolve_aliases(data)


class Timings(BaseModel):
    queue_s: float = Field(description="waiting for a batch")
    compute_s: float = Field(description="the batch's backend time")
    total_s: float = Field(description="receipt to encoded images")


class RoutingInfo(BaseModel):
    """What the request asked for, what served it and why: a downgrade is never silent."""

    quality: Quality = Field(description="the hint applied (the request's, or the deployment's default)")
    asked_model: str
    asked_steps: int
    model: str = Field(description="the model that served the request")
    steps: int = Field(description="the step count it ran")
    reason: Literal["as_asked", "pressure", "slo", "unmet", "fast"] = Field(
        description="as_asked; or why it moved: pressure (the cheapest quality given up under load), slo (the "
        "asked model was predicted past the objective), unmet (no model was predicted within it: the fastest), "
        "fast (the hint)"
    )
    prompt_class: str = Field(description="one_object, two_objects or overall: the class its quality was read for")
    predicted_s: float | None = Field(None, description="the predicted latency (queue + compute) at admission")
    objective_s: float | None = Field(None, description="the deployment's latency objective (None: none set)")


class GeneratedImage(BaseModel):
    b64: str = Field(description="the encoded image, base64")
    seed: int


class GenerateResponse(BaseModel):
    model: str
    steps: int
    guidance_scale: float
    output_format: OutputFormat
    width: int
    height: int
    seeds: list[int]
    images: list[GeneratedImage]
    timings: Timings
    batch_images: int = Field(description="images in the batch this request ran in")
    routing: RoutingInfo | None = Field(None, description="the model asked for, the model served and why")
    warnings: list[str] = Field(
        default_factory=list, description="what the request asked for that the model may not draw (unknown words)"
    )


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorBody(BaseModel):
    """Every error, on every route, has this shape (OpenAI's)."""

    error: ErrorDetail


class ModelCard(BaseModel):
    """One loaded bundle, as GET /v1/models lists it (OpenAI's model object plus fewstep's fields)."""

    id: str
    object: Literal["model"] = "model"
    created: int = Field(0, description="when the bundle was exported (Unix seconds; 0 if unknown)")
    owned_by: str = "fewstep"
    default: bool = Field(False, description="the model a request that names none runs on")
    resolution: int
    steps: list[int]
    default_steps: int
    guidance: dict[str, float | bool]
    backend: str
    evaluation: dict[str, Any] = Field(default_factory=dict)
    provenance: dict[str, Any] = Field(
        default_factory=dict, description="what the bundle was exported from: weights sha256, git commit, time"
    )


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIImageBody(BaseModel):
    """POST /v1/images/generations: the subset of OpenAI's Images API that fewstep serves."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, description=PROMPT_DESCRIPTION)
    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_IMAGES, strict=True)
    size: str | None = Field(None, pattern=r"^\d+x\d+$", description="WIDTHxHEIGHT; only the model's resolution")
    response_format: Literal["b64_json"] = "b64_json"
    user: str | None = Field(None, max_length=256, description="accepted for compatibility; ignored")
    quality: Quality | None = Field(
        None, description=QUALITY_DESCRIPTION.replace("(`routing`, X-Fewstep-* headers)", "(X-Fewstep-* headers)")
    )


class OpenAIImage(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]


class ServiceInfo(BaseModel):
    """GET /info: what a client (the playground first of all) needs to make its first request work."""

    version: str
    default_model: str | None = Field(description="the model a request that names none runs on")
    models: list[str]
    default_prompt: str = Field(description="a prompt every default model draws right")
    example_prompts: list[str]
    vocabulary: dict[str, list[str]] = Field(
        description="the words the default model draws, by category: the canonical words and the synonyms measured "
        "to draw at >= 0.85x their canonical word (results/vocabulary); other words get a warning"
    )
