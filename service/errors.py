"""The service's domain errors: what the engine and its pipelines refuse or fail with, in their own terms.

Errors in the domain, status codes at the edge (`docs/architecture.md`): each error says what
kind of failure it is (`ErrorKind`), names the domain field at fault (`steps`, `guidance`,
`width`, ...) and carries what a client needs to act (a retry delay when overloaded), and
nothing about HTTP. The API layer alone (`service.api.errors`) turns a kind into a status
code, a domain field into the request field of the route that was called, and the error into
OpenAI's shape; `fewstep generate` prints the same errors as one line.

`reason` is the bounded label of the rejection metric (`fewstep_requests_rejected_total`).
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What went wrong, in the terms a caller acts on (retry, fix the request, give up)."""

    INVALID_ARGUMENT = "invalid_argument"  # the request names something the model cannot do: fix it
    NOT_FOUND = "not_found"  # no such model
    OVERLOADED = "overloaded"  # the queue is full: retry after `retry_after_s`
    UNAVAILABLE = "unavailable"  # warming up, draining or stopped: retry elsewhere or later
    DEADLINE_EXCEEDED = "deadline_exceeded"  # no result within the request deadline
    INTERNAL = "internal"  # the backend failed on this request's batch


class EngineError(Exception):
    """Base of the engine's (and its pipelines') refusals and failures."""

    kind: ErrorKind = ErrorKind.INTERNAL
    reason = "error"


class InvalidArgument(EngineError, ValueError):
    """A request the model cannot run; `field` names the request field at fault, in domain terms.

    A `ValueError` too, so the command line reports it as a one-line usage error.
    """

    kind = ErrorKind.INVALID_ARGUMENT
    reason = "invalid"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class UnknownModel(EngineError):
    """The request names a model that is not loaded."""

    kind = ErrorKind.NOT_FOUND
    reason = "unknown_model"
    field = "model"


class QueueFull(EngineError):
    """The queue bound is reached; try again after `retry_after_s`."""

    kind = ErrorKind.OVERLOADED
    reason = "queue_full"

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class OverObjective(QueueFull):
    """With `FEWSTEP_SLO__SHED`: even the fastest option this request may run on is predicted to
    finish past the latency objective; try again after `retry_after_s` (a 429, like a full queue)."""

    reason = "over_objective"


class NotReady(EngineError):
    """Not warmed up yet, or draining after SIGTERM: admission is closed (`reason` says which)."""

    kind = ErrorKind.UNAVAILABLE
    reason = "not_ready"

    def __init__(self, message: str, reason: str = "not_ready") -> None:
        super().__init__(message)
        self.reason = reason


class DeadlineExceeded(EngineError):
    """No result within the request deadline (queued or computing: the message says which)."""

    kind = ErrorKind.DEADLINE_EXCEEDED
    reason = "deadline"


class BatchFailed(EngineError):
    """The backend raised while running this request's batch (other batches are unaffected)."""

    kind = ErrorKind.INTERNAL
    reason = "backend_error"
