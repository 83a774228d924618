"""The domain errors (service.errors): what each says about itself, with nothing about HTTP."""

from __future__ import annotations

import pytest

from service import errors
from service.errors import EngineError, ErrorKind, InvalidArgument, NotReady, QueueFull


def test_every_error_is_an_engine_error_with_a_kind_and_a_reason():
    classes = [c for c in vars(errors).values() if isinstance(c, type) and issubclass(c, EngineError)]
    assert len(classes) >= 7
    for cls in classes:
        assert isinstance(cls.kind, ErrorKind) and cls.reason, cls
    reasons = [c.reason for c in classes if c is not EngineError]
    assert len(set(reasons)) == len(reasons)  # one metric label per refusal


def test_an_invalid_argument_names_its_field_and_is_a_value_error():
    e = InvalidArgument("steps", "steps must be one of [4, 8]")
    assert e.field == "steps" and str(e) == "steps must be one of [4, 8]"
    with pytest.raises(ValueError, match="steps must be"):
        raise e


def test_not_ready_says_why_and_queue_full_when_to_retry():
    assert NotReady("warming up").reason == "not_ready"
    draining = NotReady("draining", reason="draining")
    assert draining.reason == "draining" and NotReady.reason == "not_ready"  # per instance, not the class
    full = QueueFull("queue full", retry_after_s=2.5)
    assert full.retry_after_s == 2.5 and full.kind is ErrorKind.OVERLOADED
