"""Dead-letter reason codes: a small fixed set of identifiers, one per kind of error, so the
``reason`` label of the dead-letter metrics stays bounded whatever the messages hold."""

from __future__ import annotations

import re
import typing

import services.drift.app
import services.feedback.app
import services.gateway.app
import services.ingestion.app
import services.learner.app
import services.router.app  # noqa: F401  (the services' own errors)
from shared.errors import DriftlineError, InternalError, SignatureError, SignatureProblem
from shared.events import RawEvent
from shared.validation import Fault, InvalidEventError

CODE = re.compile(r"^[a-z]+(_[a-z]+)*$")


def subclasses(cls: type) -> list[type]:
    return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]


def test_every_error_class_has_an_identifier_as_its_code() -> None:
    errors = subclasses(DriftlineError)
    assert len(errors) > 20
    for error in errors:
        assert CODE.match(error.code), (error.__name__, error.code)
    codes = {error.code for error in errors}
    assert {"bad_event", "internal_error", "unknown_stream", "no_deployment"} <= codes


def test_codes_chosen_per_instance_come_from_fixed_sets() -> None:
    raw = RawEvent(event_id="e", stream="s", entity_id="x", event_time=0, data={})
    for fault in typing.get_args(Fault):
        assert CODE.match(InvalidEventError(fault, raw, "detail 'premium'").code)
    for problem in typing.get_args(SignatureProblem):
        assert SignatureError("a model name", problem, "text").code == problem


def test_an_unexpected_exception_is_an_internal_error_whatever_its_text() -> None:
    error = InternalError(ValueError("payload 'x: y' broke it"))
    assert (error.code, str(error)) == (
        "internal_error",
        "internal error: ValueError: payload 'x: y' broke it",
    )
