"""The event schemas of every public topic: JSON on the wire, one schema per topic.

Each record carries `schema_version`, so any Kafka client in any language can produce events and
read alerts without Driftline's code. Decode with :func:`decode` (a bad message raises
`EventDecodeError` with the reason, for the dead-letter topic) and encode with :func:`encode`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    model_validator,
)

from shared.errors import EventDecodeError


def _as_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        # e.g. 0001-01-01T00:00:00+14:00: a valid text whose UTC time falls before year 1
        raise ValueError(f"{value.isoformat()} lies outside years 1 to 9999 in UTC") from None


MAX_MAGNITUDE = 1e100
"""The largest magnitude a number entering state may have (features, labels, model outputs,
probabilities, declared bounds). Detectors, scalers and running variances square values and sum
them over long windows, and ingestion sums them per entity: below 1e100 none of these can
overflow to infinity (1e200 per square leaves room for 1e108 of them), while no real measurement
comes near it. A number beyond it, NaN or infinity is refused with the field that held it."""


def check_number(value: int | float) -> float:
    """`value` as a float, or `ValueError` saying why it cannot enter state: NaN, infinity, or a
    magnitude above `MAX_MAGNITUDE` (an integer of 400 digits included)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number (NaN and infinity are not allowed)")
    if abs(value) > MAX_MAGNITUDE:
        shown = f"an integer of {value.bit_length()} bits" if isinstance(value, int) else value
        raise ValueError(f"{shown} is beyond the largest magnitude allowed, {MAX_MAGNITUDE:g}")
    return float(value)


def _bounded(value: object) -> object:
    """A number checked by `check_number` before any other validation (so the reason names the
    field, not a member of its union), kept as it came; anything else unchanged."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        check_number(value)
    return value


def _from_base64(value: object) -> object:
    if not isinstance(value, str):
        return value
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"not base64: {exc}") from None


WireBytes = Annotated[
    bytes,
    BeforeValidator(_from_base64),
    PlainSerializer(lambda b: base64.b64encode(b).decode(), return_type=str, when_used="json"),
]
"""Raw bytes in Python, base64 text on the wire."""
UtcDatetime = Annotated[datetime, AfterValidator(_as_utc)]
"""ISO 8601 text or epoch seconds on the wire; a time without a zone is read as UTC."""
Identifier = Annotated[str, Field(min_length=1, max_length=256)]
FeatureValue = Annotated[float | int | str | bool, BeforeValidator(_bounded)]
"""A feature after validation: number (see `MAX_MAGNITUDE`), category or flag."""
Label = Annotated[float | int | str | bool, BeforeValidator(_bounded)]
"""Ground truth: a class label or a regression target (see `MAX_MAGNITUDE`)."""
Number = Annotated[float, BeforeValidator(_bounded)]
"""A finite number within `MAX_MAGNITUDE`."""
VariantRole = Literal["champion", "canary", "rule", "shadow"]


def utc_now() -> datetime:
    """The current time, timezone-aware."""
    return datetime.now(UTC)


def new_id() -> str:
    """A fresh random identifier, for records that are decisions rather than effects of an input
    (an operator's or the policy's promotion decision)."""
    return uuid.uuid4().hex


_DERIVED_IDS = uuid.uuid5(uuid.NAMESPACE_URL, "https://driftline.dev/ids")


def derived_id(kind: str, *parts: str | int) -> str:
    """A stable identifier for an effect, derived from what caused it (a name-based UUID 5 over
    `kind` and `parts`): a replay after a crash produces the id its first run did, in any
    process, so every consumer can recognise what it has already applied.

    Examples
    --------
    >>> derived_id("alert", "data:pay:amount", 12) == derived_id("alert", "data:pay:amount", 12)
    True
    >>> derived_id("alert", "a", "b") == derived_id("alert", "ab")
    False

    """
    return uuid.uuid5(_DERIVED_IDS, json.dumps([kind, *parts], separators=(",", ":"))).hex


class Event(BaseModel):
    """Base of every record on a topic. No float field takes NaN or infinity: JSON has no such
    numbers, so such a record would be written with null there and could never be read back."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="ignore", allow_inf_nan=False
    )

    schema_version: int = 1


class Provenance(BaseModel):
    """The input message whose handling produced a derived record.

    A worker writes a batch's outputs before the state that records them
    (`shared.delivery.outputs_delivered`), so a crash in between replays the input and sends
    its outputs again: at new offsets, with the same provenance. Consumers apply each
    provenance once (`shared.replays.Applied`).
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    topic: str
    partition: int = Field(ge=0)
    offset: int = Field(ge=0)

    @property
    def lineage(self) -> str:
        """The input partition, whose messages keep their order in everything derived from
        them on one downstream partition: replays can be recognised by offset alone."""
        return f"{self.topic}[{self.partition}]"


class RawEvent(Event):
    """What producers write to ``events.raw``; `data` is checked against the stream's schema."""

    event_id: Identifier
    stream: Identifier
    entity_id: Identifier
    event_time: UtcDatetime
    data: dict[str, Any]


class FeatureEvent(Event):
    """A validated event on ``features``, keyed by entity id."""

    event_id: Identifier
    stream: Identifier
    entity_id: Identifier
    event_time: UtcDatetime
    features: dict[str, FeatureValue]
    ingested_at: UtcDatetime = Field(default_factory=utc_now)
    provenance: Provenance | None = None
    """The raw event's message (absent in records written before it was added, and in events
    the V2 gateway wrote from a request)."""
    answered_for: list[Identifier] = Field(default_factory=list)
    """Deployments that already predicted this event within a request (the V2 gateway wrote
    their predictions): routers pass them by, while drift still monitors the features."""


class VariantOutput(BaseModel):
    """One model variant's answer for one event."""

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    variant: Identifier
    role: VariantRole
    served: bool
    """False for shadows: they predict, but the caller never sees their answer."""
    model_name: Identifier
    model_version: str
    output: Label | None
    probabilities: dict[str, Number] | None = None
    online: bool = False
    """An online model (``online:`` URI): its version is the snapshot it answered from, and
    moves as it learns; monitors follow the model, not each snapshot."""


def prediction_id_for(event_id: str, deployment: str, outcome: VariantOutput) -> str:
    """The id of a variant's prediction for an event: from the event id, the deployment's
    variant and the model (name and version) that answered. The deployment is part of it because
    two deployments of one stream may both name a variant ``champion``."""
    return derived_id(
        "prediction",
        event_id,
        deployment,
        outcome.variant,
        outcome.model_name,
        outcome.model_version,
    )


class Prediction(Event):
    """A variant's prediction on ``predictions``, keyed by event id (the feedback join key)."""

    prediction_id: Identifier
    """`prediction_id_for` its event, deployment and answer: a replay yields the same id."""
    event_id: Identifier
    entity_id: Identifier
    stream: Identifier
    deployment: Identifier
    outcome: VariantOutput
    features: dict[str, FeatureValue]
    latency_ms: float = Field(ge=0, allow_inf_nan=False)
    event_time: UtcDatetime
    predicted_at: UtcDatetime = Field(default_factory=utc_now)


class Feedback(Event):
    """Ground truth for one event on ``feedback``, keyed by that event id."""

    event_id: Identifier
    label: Label
    label_time: UtcDatetime = Field(default_factory=utc_now)


class LabeledPrediction(Event):
    """An event's predictions joined with its label on ``predictions.labeled``."""

    event_id: Identifier
    entity_id: Identifier
    stream: Identifier
    deployment: Identifier
    features: dict[str, FeatureValue]
    outcomes: list[VariantOutput]
    label: Label
    event_time: UtcDatetime
    label_time: UtcDatetime
    feedback_delay_s: float
    provenance: Provenance | None = None
    """The prediction or feedback message that completed the join (absent in records written
    before it was added)."""
    late_variant: bool = False
    """True for a variant whose prediction came after the event was labeled: the event itself
    (features and label) was in an earlier record, which online models learned from."""


class DataWindow(BaseModel):
    """Where the data that shows a drift's new behaviour starts: what a retrain should read.

    The window runs from `start_time` (and, per partition, from `offsets`) to the topic's end
    at the time it is read, so a retrain started later sees more fresh data.
    """

    model_config = ConfigDict(frozen=True, extra="ignore", allow_inf_nan=False)

    start_time: UtcDatetime
    """Event time of the first value the detector attributes to the new behaviour."""
    start_position: int = Field(ge=1)
    """That value's 1-based index in the detector's stream (the alert's `position` is the end)."""
    estimated_by: Literal["detector_window", "warning_start", "alert_position"]
    """``detector_window``: the window the detector keeps after its cut (ADWIN), or the run
    since the most probable change point (BOCPD);
    ``warning_start``: where the detector entered its warning zone (DDM, HDDM_A and kin);
    ``alert_position``: the firing value itself, when the detector tells nothing better."""
    offsets: dict[str, dict[int, int]]
    """First offset to read, per topic (its full name on the cluster) and partition: exact for
    the topic the detector reads; for other topics the earliest offset whose record timestamp
    is at or after `start_time` (records are written after their event happens), so reading
    from there and keeping events with ``event_time >= start_time`` misses none."""


def alert_id_for(key: str, deployment: str | None, detector: str, level: str, position: int) -> str:
    """The id of a detector's finding: from what drifted (`key`, and for concept drift the
    deployment, since one model version may serve several, each with its own detector), the
    detector, the level and the 1-based position of the firing value in the key's stream."""
    return derived_id("alert", key, deployment or "", detector, level, position)


class DriftAlert(Event):
    """A detector's finding on ``alerts``, keyed by `key` (what drifted)."""

    alert_id: Identifier
    """`alert_id_for` its key, deployment, detector, level and position: a detector replayed
    after a crash re-fires with the same id, so receivers act on it once."""
    kind: Literal["data", "concept"]
    level: Literal["warning", "drift"]
    key: Identifier
    stream: str | None = None
    feature: str | None = None
    model_name: str | None = None
    model_version: str | None = None
    deployment: str | None = None
    """For concept drift: the deployment whose labeled predictions showed it."""
    detector: Identifier
    params: dict[str, Any] = Field(default_factory=dict)
    position: int = Field(ge=0)
    """How many values the detector had seen when it fired (1-based index of the firing value)."""
    event_time: UtcDatetime
    stats_before: dict[str, float] = Field(default_factory=dict)
    stats_after: dict[str, float] = Field(default_factory=dict)
    escalated: bool = False
    """True when this key drifted often enough to meet the escalation rule ("N drifts within T")."""
    recent_drifts: int = Field(default=0, ge=0)
    """Drifts of this key within the escalation span, this one included."""
    window: DataWindow | None = None
    """Where the fresh data starts (on drift; None on warnings)."""
    detected_at: UtcDatetime = Field(default_factory=utc_now)


class DeadLetter(Event):
    """A message a service could not use, with why and where it came from, on ``deadletter``."""

    reason: str
    code: Identifier = "rejected"
    """The reason's fixed category (`shared.errors.DriftlineError.code`, e.g. ``bad_event``), to
    count and filter by; `reason` is the full text, with the offending values."""
    service: Identifier
    source_topic: str
    partition: int
    offset: int
    key: WireBytes | None = None
    value: WireBytes
    """The original bytes, unchanged (base64 on the wire)."""
    failed_at: UtcDatetime = Field(default_factory=utc_now)


class ModelSnapshot(Event):
    """An online model's state on ``model-snapshots`` (compacted, keyed by `model_id`)."""

    model_id: Identifier
    model_type: Identifier
    sequence: int = Field(ge=0)
    """Grows with every snapshot of one model: readers keep the highest."""
    n_learned: int = Field(ge=0)
    metrics: dict[str, float] = Field(default_factory=dict)
    created_at: UtcDatetime = Field(default_factory=utc_now)
    payload: WireBytes
    """The pickled model; read only after `signature` verifies."""
    signature: str = ""
    """Hex HMAC-SHA256 of `payload` bound to `identity`, under the snapshot key
    (`shared.signing.sign_snapshot`); empty when unsigned."""

    @property
    def identity(self) -> tuple[str, ...]:
        """What the signature binds the payload to: a payload signed as one model id, type,
        sequence or schema version does not verify as another."""
        return (
            "model-snapshot",
            self.model_id,
            self.model_type,
            str(self.sequence),
            str(self.schema_version),
        )


class RoutingRule(BaseModel):
    """Send events whose feature `field` compares to `value` by `op` to a variant."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="forbid", allow_inf_nan=False
    )

    field: Identifier
    op: Literal["==", "!=", "<", "<=", ">", ">=", "in"] = "=="
    value: Any


class Variant(BaseModel):
    """One model serving (or shadowing) a deployment."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="forbid", allow_inf_nan=False
    )

    name: Identifier
    role: VariantRole
    model_uri: Identifier
    """``models:/<name>@<alias>`` or ``models:/<name>/<version>`` (MLflow registry),
    ``online:<model id>`` (the learner's snapshots) or ``v2+http(s)://<host>:<port>/<model>``
    (an Open Inference Protocol server; `shared.model_uris`)."""
    weight: float = Field(default=0.0, ge=0.0, le=1.0)
    """Share of entities a canary serves (sticky per entity)."""
    rule: RoutingRule | None = None
    """For role ``rule``: which events this variant serves."""


class OnlineModelSpec(BaseModel):
    """An online model the learner trains for a deployment."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="forbid", allow_inf_nan=False
    )

    model_id: Identifier
    model_type: Identifier
    """A name from the model catalogue, e.g. ``logistic_regression``."""
    params: dict[str, Any] = Field(default_factory=dict)
    task: Literal["classification", "regression"] = "classification"
    per_entity: bool = False
    """One model per entity key instead of one for the whole stream."""


class RetrainSpec(BaseModel):
    """How a deployment's batch model is retrained after a drift alert, and how the new version
    is tried before it may serve."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="forbid", allow_inf_nan=False
    )

    trainer: str = "shared.trainers:gradient_boosting"
    """``package.module:function`` taking (features DataFrame, labels Series), returning a fitted
    scikit-learn-compatible model."""
    model_name: Identifier | None = None
    """Registered model the new version joins; None: the champion's (``models:/<name>@...``)."""
    min_samples: int = Field(default=500, ge=1)
    """Labeled events the window must hold before a retrain runs."""
    deploy_as: Literal["canary", "shadow"] = "shadow"
    """How the new version (alias ``challenger``) joins the deployment."""
    canary_weight: float = Field(default=0.1, gt=0.0, le=1.0)
    """Share of entities the challenger serves when deployed as a canary."""


class PromotionPolicy(BaseModel):
    """When a challenger may replace the champion (see `shared.promotion.decide`)."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="forbid", allow_inf_nan=False
    )

    min_samples: int = Field(default=500, ge=1)
    """Labeled outcomes each variant needs before any decision."""
    min_improvement: float = Field(default=0.01, ge=0.0)
    """Absolute error-rate reduction the challenger must show to be promoted."""
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    """Overall significance level across all looks."""
    max_looks: int = Field(default=20, ge=1)
    """Planned evaluations; each look tests at ``alpha / max_looks``, and the last one rolls back
    a challenger that is not clearly better by then."""
    max_samples: int = Field(default=20_000, ge=1)
    """Outcomes after which a challenger that is not clearly better is rolled back."""
    max_tier_regression: float = Field(default=0.02, ge=0.0)
    """How much worse than the champion the challenger may be on any tier."""
    min_tier_samples: int = Field(default=100, ge=1)
    """Outcomes a tier needs in both variants before its regression counts."""
    tier_feature: str | None = None
    """Feature whose value names an event's tier (e.g. ``plan``); None: no tiers."""


PromotionAction = Literal["promote", "wait", "rollback"]
DecisionAction = Literal["promote", "wait", "rollback", "retrain"]
"""What a decision on ``decisions`` did: the policy's actions, or an operator's retrain that
deployed a new challenger."""


class PromotionDecision(Event):
    """A decision on a deployment's challenger on ``decisions``, keyed by `deployment`: the
    policy's at each look (with the numbers it decided on), or an operator's override."""

    decision_id: Identifier = Field(default_factory=new_id)
    deployment: Identifier
    model_name: Identifier
    """Registered model both the champion and the challenger are versions of; for a challenger
    on another backend (a V2 endpoint, `shared.rollout.swap_challengers`), the challenger's."""
    champion_version: str | None = None
    """None when an operator decides without live numbers."""
    challenger_version: str
    challenger_variant: str | None = None
    """The challenger's variant in the deployment (None if it no longer has one)."""
    action: DecisionAction
    reason: str
    decided_by: Literal["policy", "operator"] = "policy"
    operator: str | None = None
    """Who decided, for an operator's decision (the console's user, the CLI's login)."""
    champion_error: float | None = None
    """Error rate on the labeled outcomes counted since the challenger was deployed."""
    challenger_error: float | None = None
    champion_samples: int = Field(default=0, ge=0)
    challenger_samples: int = Field(default=0, ge=0)
    z: float | None = None
    """Two-proportion z statistic (positive: the challenger errs less); None if undefined."""
    p_value: float | None = None
    """One-sided p-value that the challenger is better; None if undefined."""
    decided_at: UtcDatetime = Field(default_factory=utc_now)


class Deployment(Event):
    """A deployment on ``deployments`` (compacted, keyed by `name`); the latest one wins."""

    name: Identifier
    stream: Identifier
    variants: list[Variant]
    online_models: list[OnlineModelSpec] = Field(default_factory=list)
    retrain: RetrainSpec = Field(default_factory=RetrainSpec)
    promotion: PromotionPolicy = Field(default_factory=PromotionPolicy)
    deleted: bool = False
    updated_at: UtcDatetime = Field(default_factory=utc_now)
    updated_by: str | None = None
    """Who published this record from the console or the CLI; None for the platform's own
    changes (a promotion policy, a retrain job)."""

    @model_validator(mode="after")
    def _check_variants(self) -> Deployment:
        """A deployment the router can always answer with: one champion, canaries within 100 %."""
        if self.deleted:
            return self
        roles = [v.role for v in self.variants]
        if roles.count("champion") != 1:
            raise ValueError(f"needs exactly one champion variant, has {roles.count('champion')}")
        names = [v.name for v in self.variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique, got {names}")
        if sum(v.weight for v in self.variants if v.role == "canary") > 1.0:
            raise ValueError("canary weights add up to more than 1")
        if any(v.role == "rule" and v.rule is None for v in self.variants):
            raise ValueError("a variant with role 'rule' needs a rule")
        return self


FeatureType = Literal["numeric", "categorical", "boolean"]


class FeatureSpec(BaseModel):
    """One declared feature of a stream: its type and what values it may take."""

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="forbid", allow_inf_nan=False
    )

    name: Identifier
    type: FeatureType = "numeric"
    required: bool = True
    min: Number | None = None
    """Lowest allowed value (numeric only)."""
    max: Number | None = None
    """Highest allowed value (numeric only)."""
    categories: list[str] | None = None
    """Allowed values (categorical only); None allows any text."""

    @model_validator(mode="after")
    def _check_range(self) -> FeatureSpec:
        """A range no value fits would refuse every event of the stream."""
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min {self.min:g} is above max {self.max:g}")
        return self


class WindowedAggregate(BaseModel):
    """Per-entity count and mean of a numeric feature over the last `minutes` of event time.

    Added to each feature event as ``<field>_count_<minutes>m`` and ``<field>_mean_<minutes>m``.
    """

    model_config = ConfigDict(
        frozen=True, use_attribute_docstrings=True, extra="forbid", allow_inf_nan=False
    )

    field: Identifier
    minutes: int = Field(ge=1, le=24 * 60)

    @property
    def feature_names(self) -> tuple[str, str]:
        """The feature names of its count and mean, e.g. ``amount_count_10m``."""
        suffix = f"{self.minutes}m"
        return f"{self.field}_count_{suffix}", f"{self.field}_mean_{suffix}"


class StreamSchema(Event):
    """A declared stream on ``streams`` (compacted, keyed by `name`): what its events must hold.

    Raw events name their stream; their `entity_id` is the entity key. Fields of `data` that are
    not declared are not passed on as features.
    """

    name: Identifier
    features: list[FeatureSpec]
    aggregates: list[WindowedAggregate] = Field(default_factory=list)
    updated_at: UtcDatetime = Field(default_factory=utc_now)
    updated_by: str | None = None
    """Who published this declaration from the console or the CLI."""

    @model_validator(mode="after")
    def _check_features(self) -> StreamSchema:
        """Aggregates read declared numeric features; feature names are unique."""
        names = [f.name for f in self.features]
        if len(set(names)) != len(names):
            raise ValueError(f"feature names must be unique, got {names}")
        numeric = {f.name for f in self.features if f.type == "numeric"}
        for aggregate in self.aggregates:
            if aggregate.field not in numeric:
                raise ValueError(f"aggregate field {aggregate.field!r} is not a numeric feature")
        return self

    @property
    def feature_names(self) -> list[str]:
        """Every feature its feature events carry: the declared ones, then the aggregates'."""
        names = [f.name for f in self.features]
        return names + [n for a in self.aggregates for n in a.feature_names]


E = TypeVar("E", bound=Event)


def encode(event: Event) -> bytes:
    """The event as JSON bytes for the wire."""
    return event.model_dump_json().encode()


def decode(schema: type[E], data: bytes | None, topic: str) -> E:
    """Parse and validate `data`; any problem raises `EventDecodeError` naming the first one."""
    if data is None:
        raise EventDecodeError(topic, "empty message (no value)")
    try:
        return schema.model_validate_json(data)
    except ValidationError as exc:
        raise EventDecodeError(topic, describe_problem(exc)) from None


def describe_problem(exc: ValidationError) -> str:
    """The first problem pydantic found, as `field: message`."""
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"])
    if error["type"] == "json_invalid":
        return f"not valid JSON: {error['msg']}"
    return f"{where}: {error['msg']}" if where else error["msg"]
