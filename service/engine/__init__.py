"""The engine: admission, the batching queue, and the runner thread. Routes know only `Engine.generate()`."""

from service.engine.engine import Engine, EngineConfig
from service.engine.types import (
    BatchFailed,
    DeadlineExceeded,
    EngineError,
    GenerateRequest,
    GenerateResult,
    NotReady,
    QueueFull,
    UnknownModel,
)

__all__ = [
    "BatchFailed",
    "DeadlineExceeded",
    "Engine",
    "EngineConfig",
    "EngineError",
    "GenerateRequest",
    "GenerateResult",
    "NotReady",
    "QueueFull",
    "UnknownModel",
]
