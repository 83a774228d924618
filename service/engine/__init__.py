"""The engine: admission, the request queue, the schedulers and the runner thread. Routes know only
`Engine.generate()` and the domain errors it raises (`service.errors`, re-exported here)."""

from service.engine.engine import Engine, EngineConfig
from service.engine.types import GenerateRequest, GenerateResult, ResolvedRequest, Routing
from service.errors import (
    BatchFailed,
    DeadlineExceeded,
    EngineError,
    ErrorKind,
    InvalidArgument,
    NotReady,
    OverObjective,
    QueueFull,
    UnknownModel,
)

__all__ = [
    "BatchFailed",
    "DeadlineExceeded",
    "Engine",
    "EngineConfig",
    "EngineError",
    "ErrorKind",
    "GenerateRequest",
    "GenerateResult",
    "InvalidArgument",
    "NotReady",
    "OverObjective",
    "QueueFull",
    "ResolvedRequest",
    "Routing",
    "UnknownModel",
]
