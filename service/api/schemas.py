"""Request and response bodies of the HTTP API (they are also the OpenAPI schema at /docs).

Requests forbid unknown fields, so a misspelt `guidance` is a 422 naming it instead of a silently
ignored option. Limits that depend on the loaded model (steps, guidance range, size) are checked
by the engine against the bundle's manifest, and come back as 422s naming the same fields.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from fewstep.rng import MAX_SEED

MAX_PROMPT_CHARS = 1000
MAX_IMAGES = 8

OutputFormat = Literal["png", "jpeg", "webp"]


class GenerateBody(BaseModel):
    """POST /generate."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS, examples=["a red circle above a blue square"])
    negative_prompt: str | None = Field(
        None, max_length=MAX_PROMPT_CHARS, description="teachers only: what the guidance steers away from"
    )
    model: str | None = Field(None, description="a model from GET /v1/models; default: the service's default model")
    n: int = Field(1, ge=1, le=MAX_IMAGES, description="images of this prompt; image j uses seed + j")
    steps: int | None = Field(None, ge=1, description="a step count the model supports; default: its recommended")
    guidance_scale: float | None = Field(None, ge=0, description="within the model's range; default: its default")
    seed: int | None = Field(None, ge=0, le=MAX_SEED - MAX_IMAGES, description="default: random; always returned")
    width: int | None = Field(None, ge=1, description="must equal the model's resolution")
    height: int | None = Field(None, ge=1, description="must equal the model's resolution")
    output_format: OutputFormat = "png"


class Timings(BaseModel):
    queue_s: float = Field(description="waiting for a batch")
    compute_s: float = Field(description="the batch's backend time")
    total_s: float = Field(description="receipt to encoded images")


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
    created: int = 0
    owned_by: str = "fewstep"
    resolution: int
    steps: list[int]
    default_steps: int
    guidance: dict[str, float | bool]
    backend: str
    evaluation: dict[str, Any] = Field(default_factory=dict)


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class OpenAIImageBody(BaseModel):
    """POST /v1/images/generations: the subset of OpenAI's Images API that fewstep serves."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    model: str | None = None
    n: int = Field(1, ge=1, le=MAX_IMAGES)
    size: str | None = Field(None, pattern=r"^\d+x\d+$", description="WIDTHxHEIGHT; only the model's resolution")
    response_format: Literal["b64_json"] = "b64_json"
    user: str | None = Field(None, max_length=256, description="accepted for compatibility; ignored")


class OpenAIImage(BaseModel):
    b64_json: str
    revised_prompt: str | None = None


class OpenAIImagesResponse(BaseModel):
    created: int
    data: list[OpenAIImage]
