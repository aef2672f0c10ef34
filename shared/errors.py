"""One root exception for Driftline; subclasses carry the data their message is built from."""

from __future__ import annotations

from typing import Literal


class DriftlineError(Exception):
    """Root of every error Driftline raises on purpose (a user or operator can act on it)."""

    exit_code: int = 2
    """What the `driftline` command exits with: 2 for a mistake to fix, 3 for "not yet, try
    again later" (scripts and CI can retry on 3 and fail on 2)."""

    code: str = "rejected"
    """A fixed category of the error (``bad_event``, ``unknown_model``...), never built from
    its data: the ``reason`` label of the dead-letter metrics and a dead letter's ``code``,
    which must stay a small set however many different messages come in."""


class SettingsError(DriftlineError):
    """An environment variable holds a value Driftline cannot use."""

    code = "bad_setting"

    def __init__(self, variable: str, value: object, problem: str) -> None:
        self.variable = variable
        self.value = value
        self.problem = problem
        shown = "<unset>" if value is None else repr(value)
        super().__init__(f"setting {variable}={shown}: {problem}")


class UnavailableError(DriftlineError):
    """A server Driftline needs (the Kafka brokers, MLflow) does not answer: nothing is wrong
    with the request, so scripts and CI retry later (exit 3)."""

    exit_code = 3

    def __init__(self, what: str, where: str, reason: str) -> None:
        self.what = what
        self.where = where
        self.reason = reason
        super().__init__(f"{what} at {where} is unavailable ({reason}); retry later")


class UnknownDeploymentError(DriftlineError):
    """No live deployment has the name an operator gave."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown deployment {name!r}: `driftline deployments list` shows them")


class EventDecodeError(DriftlineError):
    """A message's bytes are not a valid event of the topic's schema."""

    code = "bad_event"

    def __init__(self, topic: str, reason: str) -> None:
        self.topic = topic
        self.reason = reason
        super().__init__(f"bad event on {topic}: {reason}")


class KafkaStartError(DriftlineError):
    """The local broker did not come up; `reason` is taken from its own log."""

    def __init__(self, reason: str, log_path: str) -> None:
        self.reason = reason
        self.log_path = log_path
        super().__init__(f"Kafka did not start: {reason} (full log: {log_path})")


SignatureProblem = Literal["unsigned", "bad_signature", "tombstone", "wrong_key"]


class SignatureError(DriftlineError):
    """A model snapshot is unsigned or its HMAC does not match: it is never unpickled."""

    def __init__(self, model: str, code: SignatureProblem, problem: str) -> None:
        self.model = model
        self.code = code
        self.problem = problem
        super().__init__(f"snapshot of model {model!r} refused: {problem}")


class WebhookRefusedError(DriftlineError):
    """A webhook request is not signed by a known key within the time tolerance: answer 401."""

    code = "webhook_refused"

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(f"webhook refused: {reason}")


class WebhookFailedError(DriftlineError):
    """A webhook URL did not take an alert in any attempt: the alert is dead-lettered for it."""

    code = "webhook_failed"


class SealError(DriftlineError):
    """A table value has no valid MAC for its identity (table and key): it is never decoded."""

    code = "bad_seal"

    def __init__(self, identity: str, problem: str) -> None:
        self.identity = identity
        self.problem = problem
        super().__init__(f"sealed value {identity} refused: {problem}")


class ModelError(DriftlineError):
    """A model variant could not answer; `kind` names why (the dead-letter metric's label)."""

    kind = "model failed"
    code = "model_failed"

    def __init__(self, uri: str, problem: str) -> None:
        self.uri = uri
        self.problem = problem
        super().__init__(f"{self.kind}: {uri}: {problem}")


class UnknownModelError(ModelError):
    """A model URI names no model Driftline can load (bad scheme, no such name, version, alias)."""

    kind = "unknown model"
    code = "unknown_model"


class WrongFeaturesError(ModelError):
    """An event lacks features the model was trained on."""

    kind = "wrong feature set"
    code = "wrong_features"


class EndpointError(ModelError):
    """A V2 (Open Inference Protocol) endpoint did not answer (refused, timed out, failed with
    5xx, not ready): try again later (exit 3 at the CLI)."""

    kind = "endpoint unavailable"
    code = "endpoint_unavailable"
    exit_code = 3


class CircuitOpenError(EndpointError):
    """A V2 endpoint failed repeatedly; it is not asked until its breaker lets a probe through."""

    kind = "circuit open"
    code = "circuit_open"


class EndpointRefusedError(ModelError):
    """A V2 endpoint answered, but refused the request (4xx) or gave an answer that cannot be
    read: the request or the model is at fault, not the server's availability."""

    kind = "endpoint refused"
    code = "endpoint_refused"


class InternalError(DriftlineError):
    """A handler failed on a message for a reason that is not the message's fault (a bug, a
    failing dependency): the message is dead-lettered all the same, so nothing is lost."""

    code = "internal_error"

    def __init__(self, cause: Exception) -> None:
        self.cause = cause
        super().__init__(f"internal error: {type(cause).__name__}: {cause}")
