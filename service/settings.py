"""Service settings, from `FEWSTEP_*` environment variables (pydantic-settings) or keyword arguments.

Everything the service reads from its environment is declared here, once, with its unit in the
name (`_s` seconds, `_bytes`, `_images`). `load_settings` turns a validation failure into a
`SettingsError` that names the environment variable at fault, so a bad deployment says which key
to fix instead of printing a pydantic traceback.

Nested backend settings use `__`: `FEWSTEP_BACKEND__KIND=onnxruntime`, `FEWSTEP_BACKEND__THREADS=2`;
so do the latency objective's: `FEWSTEP_SLO__P99_MS=800` (`SloSettings`, docs/slo.md).
Lists (`FEWSTEP_BUNDLES`, `FEWSTEP_API_KEYS`, `FEWSTEP_CORS_ORIGINS`) take a JSON list or a comma-separated string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from fewstep.config import StrictModel
from service.backends.base import BackendSettings

ENV_PREFIX = "FEWSTEP_"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names its environment variable."""


def _split_list(value: Any) -> Any:
    """Accept `a,b` as well as `["a", "b"]` for list settings given as one environment string."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            return json.loads(text)
        return [part.strip() for part in text.split(",") if part.strip()]
    return value


class SloSettings(StrictModel):
    """The latency objective and how the controller serves to it (`service.engine.slo`, docs/slo.md)."""

    p99_ms: float | None = Field(
        None,
        gt=0,
        description="the latency objective: at most 1% of requests slower than this (queue + compute, ms); "
        "None = no objective (requests run on the model they name, as without the controller)",
    )
    quality: Literal["auto", "best", "fast"] | None = Field(
        None,
        description="the quality hint of a request that gives none: auto (the best model predicted to finish "
        "within the objective), best (never downgraded), fast (the cheapest); None = auto with an objective, "
        "best without",
    )
    headroom: float = Field(0.8, gt=0, le=1, description="the share of the objective a prediction may use")
    pressure_start: float = Field(
        0.5,
        ge=0,
        le=1,
        description="at this share of the headroom target, the cheapest quality (the prompt classes that lose "
        "least) starts to be given up; 1 = only when the asked model is predicted late",
    )
    recovery_s: float | None = Field(
        None, gt=0, description="half-life of the controller's pressure once load falls; None = the objective"
    )
    shed: bool = Field(
        False, description="refuse (429) a request that even the fastest model it may run on would finish late"
    )


class ServiceSettings(BaseSettings):
    """How the service loads bundles, batches requests and admits clients."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    bundles: Annotated[list[Path], NoDecode] = Field(
        default_factory=lambda: [Path("bundles")],
        description="bundle directories, or directories whose subdirectories are bundles (each with manifest.json)",
    )
    default_model: str | None = Field(None, description="model used when a request names none; None = first loaded")
    backend: BackendSettings = Field(default_factory=BackendSettings)

    max_batch_images: int | None = Field(
        None, ge=1, le=1024, description="most images one batch may hold; None = from the warm-up cost profile"
    )
    max_wait_s: float | None = Field(
        None, ge=0, le=10, description="longest a request waits for a fuller batch; None = from the cost profile"
    )
    batch_wait_rule: Literal["greedy", "bounded"] = Field(
        "greedy",
        description="with max_wait_s unset: greedy dispatches whenever the runner is free (no waiting for company); "
        "bounded waits up to the batch-1 time x (1 - 1/gain) from the cost profile",
    )
    batch_profile_budget_s: float = Field(
        5.0, gt=0, le=120, description="warm-up time per model for the batch cost profile (when a bound is None)"
    )
    tuning_cache: Path | None = Field(
        None,
        description="a JSON file where start-up measurements (kind=auto's timings, the batch cost profile) are "
        "kept per machine and bundle, so later starts reuse them and serve the same choice (service.tuning); "
        "None = measure at every start",
    )
    tuning_refresh: bool = Field(False, description="measure again at this start and overwrite the tuning cache")
    tuning_profile_budget_s: float = Field(
        20.0, gt=0, le=600, description="with tuning_cache: the batch profile's budget per model, paid once per machine"
    )
    scheduling: Literal["request", "step"] = Field(
        "request",
        description="request: a batch runs all its steps (dynamic batching); step: images join and leave "
        "the running batch between sampler steps (iteration-level); same API and images",
    )
    queue_limit_images: int = Field(256, ge=1, description="images queued before new requests get 429")
    request_timeout_s: float = Field(60.0, gt=0, description="deadline of one request, queue and compute (504)")
    drain_timeout_s: float = Field(30.0, ge=0, description="on SIGTERM, how long accepted work may take to finish")
    max_body_bytes: int = Field(64 * 1024, ge=1024, description="larger request bodies get 413")
    body_timeout_s: float = Field(
        10.0,
        gt=0,
        le=300,
        description="longest a client may take to send a request body, from the end of its headers; slower "
        "ones get 408 and their connection is closed (a trickling client cannot hold a connection open)",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="origins (scheme://host[:port]) whose browser pages may call the API across origins; "
        "'*' = any; empty = no CORS headers (browsers allow same-origin calls only)",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="accepted bearer keys; empty = no authentication"
    )
    warmup: bool = Field(True, description="run one batch per model and step count before /readyz turns ready")
    slo: SloSettings = Field(default_factory=SloSettings, description="the latency objective (docs/slo.md)")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    log_level: str = Field("info", pattern="^(critical|error|warning|info|debug|trace)$")

    @field_validator("bundles", "api_keys", "cors_origins", mode="before")
    @classmethod
    def _lists(cls, value: Any) -> Any:
        return _split_list(value)

    @model_validator(mode="after")
    def _objective_within_deadline(self) -> ServiceSettings:
        p99_ms = self.slo.p99_ms
        if p99_ms is not None and p99_ms >= 1000 * self.request_timeout_s:
            raise ValueError(
                f"FEWSTEP_SLO__P99_MS ({p99_ms:g} ms) must be below the request deadline FEWSTEP_REQUEST_TIMEOUT_S "
                f"({self.request_timeout_s:g} s): a request past the deadline is answered 504, never late"
            )
        return self

    @field_validator("cors_origins", mode="after")
    @classmethod
    def _origins_are_origins(cls, origins: list[str]) -> list[str]:
        """An origin is what a browser sends in `Origin`: no path, no trailing slash (a typo there
        would silently match nothing)."""
        for origin in origins:
            if origin == "*":
                continue
            scheme, sep, rest = origin.partition("://")
            if scheme not in ("http", "https") or not sep or not rest or "/" in rest:
                raise ValueError(f"{origin!r} is not an origin: write scheme://host[:port], e.g. https://app.example")
        return origins

    @field_validator("api_keys", mode="after")
    @classmethod
    def _keys_not_blank(cls, keys: list[SecretStr]) -> list[SecretStr]:
        if any(not k.get_secret_value().strip() for k in keys):
            raise ValueError("an empty key would accept an empty Authorization header")
        return keys


def env_name(loc: tuple[Any, ...]) -> str:
    """The environment variable for a pydantic error location, e.g. ('backend', 'kind') -> FEWSTEP_BACKEND__KIND."""
    parts = [str(p) for p in loc if not isinstance(p, int)]
    return ENV_PREFIX + "__".join(parts).upper() if parts else ENV_PREFIX + "*"


def load_settings(**overrides: Any) -> ServiceSettings:
    """Settings from the environment with `overrides` on top; a `SettingsError` naming the key on failure."""
    try:
        return ServiceSettings(**overrides)
    except ValidationError as e:
        problems = "; ".join(
            f"{env_name(err['loc'])}: {err['msg']}" if err["loc"] else err["msg"].removeprefix("Value error, ")
            for err in e.errors()
        )  # an error of no one field (a rule across fields) names its variables in its message
        raise SettingsError(f"invalid service settings: {problems}") from None
    except ValueError as e:  # a list setting that is neither JSON nor comma-separated text
        raise SettingsError(f"invalid service settings: {e}") from None
