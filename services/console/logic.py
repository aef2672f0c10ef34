"""The console's logic without Kafka or HTTP: who a request is, the live view of the topics it
reads, error rates per variant over time and their charts, the service board and the deployment
form (features' distributions are in `distributions`)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from collections import Counter, defaultdict, deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from html import escape
from typing import Literal

from pydantic import BaseModel

from services.console.distributions import Distributions
from shared.deploying import deployment_from_options
from shared.errors import DriftlineError
from shared.events import (
    DeadLetter,
    Deployment,
    DriftAlert,
    FeatureEvent,
    LabeledPrediction,
    PromotionDecision,
    PromotionPolicy,
    RetrainSpec,
    StreamSchema,
    decode,
)
from shared.health import Counts
from shared.records import check_declaration, check_deployment
from shared.settings import ConsoleSettings
from shared.topics import (
    ALERTS,
    DEADLETTER,
    DECISIONS,
    DEPLOYMENTS,
    FEATURES,
    PREDICTIONS_LABELED,
    STREAMS,
)

Role = Literal["viewer", "editor"]


@dataclass(frozen=True)
class User:
    """Who sent a request, and what they may do."""

    name: str
    """Recorded as who acted: the basic-auth user name, the proxy's user, or the token's role."""
    role: Role

    @property
    def can_edit(self) -> bool:
        """Whether the user may change deployments, promote, roll back and retrain."""
        return self.role == "editor"


def _same_secret(given: str, secret: str) -> bool:
    return hmac.compare_digest(given.encode(), secret.encode())


def _role_of_token(token: str, settings: ConsoleSettings) -> Role | None:
    if settings.editor_token and _same_secret(token, settings.editor_token.get_secret_value()):
        return "editor"
    if settings.viewer_token and _same_secret(token, settings.viewer_token.get_secret_value()):
        return "viewer"
    return None


def authenticate(headers: Mapping[str, str], settings: ConsoleSettings) -> User | None:
    """The user a request's headers prove, or None: the trusted proxy header (only when it is
    configured), else a bearer token, else basic auth whose password is a token."""
    if settings.trusted_user_header:
        proxied = headers.get(settings.trusted_user_header, "").strip()
        if proxied:
            groups = {g.strip() for g in headers.get(settings.trusted_groups_header, "").split(",")}
            return User(proxied, "editor" if groups & settings.editor_groups else "viewer")
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        role = _role_of_token(credentials.strip(), settings)
        return None if role is None else User(f"{role} token", role)
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        name, _, password = decoded.partition(":")
        role = _role_of_token(password, settings)
        return None if role is None else User(name or role, role)
    return None


def csrf_token(key: bytes, user: User) -> str:
    """The token a form of `user`'s carries: a MAC of who they are under the process's key, so a
    page of another site cannot make their browser post a change."""
    return hmac.new(key, f"{user.role}:{user.name}".encode(), hashlib.sha256).hexdigest()


def csrf_ok(key: bytes, user: User, given: str) -> bool:
    """Whether a posted form carries `user`'s token."""
    return hmac.compare_digest(csrf_token(key, user).encode(), given.encode())


def error_of(output: object, label: object) -> float | None:
    """One answer's error: 0 or 1 for a class, the absolute error for a number (a float label);
    None when the model gave no answer."""
    if output is None:
        return None
    if (
        isinstance(label, float)
        and isinstance(output, int | float)
        and not isinstance(output, bool)
    ):
        return abs(float(output) - label)
    return float(output != label)


SeriesKey = tuple[str, str, str]
"""(deployment, variant, model version)."""


@dataclass
class ErrorSeries:
    """Errors of each variant and model version in event-time buckets, the newest `horizon_s`."""

    bucket_s: float
    horizon_s: float
    buckets: dict[SeriesKey, dict[float, list[float]]] = field(
        default_factory=lambda: defaultdict(dict)
    )
    newest: float = 0.0

    def add(self, labeled: LabeledPrediction) -> None:
        """Count each answered outcome of a labeled prediction in its event time's bucket."""
        at = labeled.event_time.timestamp()
        start = math.floor(at / self.bucket_s) * self.bucket_s
        for outcome in labeled.outcomes:
            error = error_of(outcome.output, labeled.label)
            if error is None:
                continue
            key = (labeled.deployment, outcome.variant, outcome.model_version)
            total = self.buckets[key].setdefault(start, [0.0, 0.0])
            total[0] += error
            total[1] += 1
        if start > self.newest:
            self.newest = start
            self._forget_before(start - self.horizon_s)

    def _forget_before(self, oldest: float) -> None:
        for key in list(self.buckets):
            kept = {t: v for t, v in self.buckets[key].items() if t >= oldest}
            if kept:
                self.buckets[key] = kept
            else:
                del self.buckets[key]

    def series(self, deployment: str) -> dict[str, list[tuple[float, float]]]:
        """Each ``variant vVERSION`` of a deployment: (bucket start, mean error) in time order."""
        return {
            f"{variant} v{version}": [(t, s / n) for t, (s, n) in sorted(points.items())]
            for (name, variant, version), points in sorted(self.buckets.items())
            if name == deployment
        }

    def recent(self, deployment: str, buckets: int = 5) -> dict[str, tuple[float, int]]:
        """Each variant's mean error and answer count over the newest `buckets` buckets."""
        since = self.newest - (buckets - 1) * self.bucket_s
        found: dict[str, tuple[float, int]] = {}
        for (name, variant, version), points in sorted(self.buckets.items()):
            if name != deployment:
                continue
            total = [v for t, v in points.items() if t >= since]
            errors, count = sum(v[0] for v in total), sum(v[1] for v in total)
            if count:
                found[f"{variant} v{version}"] = (errors / count, int(count))
        return found


_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b")


def error_chart(
    series: dict[str, list[tuple[float, float]]],
    alerts: Sequence[DriftAlert] = (),
    width: int = 640,
) -> str:
    """An inline SVG line chart of each series' error over time, with a legend, and the
    deployment's drift alerts on the same time axis: a line at each alert and, shaded behind
    it, its fresh-data window (from the window's start to the alert). Empty text when there is
    nothing to draw."""
    points = [p for values in series.values() for p in values]
    marks = [(a, a.event_time.timestamp()) for a in alerts if a.level == "drift"]
    windows = [a.window.start_time.timestamp() for a, _ in marks if a.window is not None]
    times = [t for t, _ in points] + [t for _, t in marks] + windows
    if not times:
        return ""
    height, pad = 200, 30
    t0, t1 = min(times), max(times)
    top = max([v for _, v in points] + [0.05])
    span = (t1 - t0) or 1.0

    def x_of(t: float) -> float:
        return pad + (t - t0) / span * (width - 2 * pad)

    def xy(t: float, v: float) -> str:
        y = height - pad - v / top * (height - 2 * pad)
        return f"{x_of(t):.1f},{y:.1f}"

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height + 20 * len(series)}" '
        f'width="{width}" role="img" aria-label="error per variant and drift alerts over time">',
        f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
        'stroke="#999"/>',
        f'<text x="2" y="{pad}" font-size="10">{top:.2f}</text>',
        f'<text x="2" y="{height - pad}" font-size="10">0</text>',
        f'<text x="{pad}" y="{height - 8}" font-size="10">{_clock(t0)}</text>',
        f'<text x="{width - pad - 40}" y="{height - 8}" font-size="10">{_clock(t1)}</text>',
    ]
    for alert, at in marks:
        x = x_of(at)
        title = escape(
            f"{alert.kind} drift: {alert.key} ({alert.detector}, value {alert.position})"
        )
        mark = [
            f'<g class="alert-mark" data-alert="{escape(alert.alert_id)}"><title>{title}</title>'
        ]
        if alert.window is not None:
            start = x_of(alert.window.start_time.timestamp())
            mark.append(
                f'<rect class="window" x="{start:.1f}" y="{pad}" width="{max(x - start, 1.0):.1f}" '
                f'height="{height - 2 * pad}" fill="#ff7f0e" fill-opacity="0.15"/>'
            )
        mark.append(
            f'<line x1="{x:.1f}" y1="{pad}" x2="{x:.1f}" y2="{height - pad}" stroke="#d62728" '
            'stroke-dasharray="4 3"/></g>'
        )
        parts.append("".join(mark))
    for i, (name, values) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        line = " ".join(xy(t, v) for t, v in values)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{line}"/>')
        for t, v in values:
            x, y = xy(t, v).split(",")
            parts.append(f'<circle cx="{x}" cy="{y}" r="2" fill="{colour}"/>')
        legend_y = height + 14 + 20 * i
        parts.append(
            f'<rect x="{pad}" y="{legend_y - 9}" width="10" height="10" fill="{colour}"/>'
            f'<text x="{pad + 16}" y="{legend_y}" font-size="12">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def _clock(seconds: float) -> str:
    return datetime.fromtimestamp(seconds).strftime("%H:%M")


@dataclass
class LiveView:
    """What the console shows, kept up to date from the topics it reads (`apply` each record)."""

    prefix: str
    history: int
    errors: ErrorSeries
    distributions: Distributions
    deployments: dict[str, Deployment] = field(default_factory=dict)
    streams: dict[str, StreamSchema] = field(default_factory=dict)
    alerts: deque[DriftAlert] = field(default_factory=deque)
    decisions: deque[PromotionDecision] = field(default_factory=deque)
    dead_letters: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Dead letters by (service, reason code)."""
    dead_letter_reasons: dict[tuple[str, str], str] = field(default_factory=dict)
    """The latest reason text of each (service, reason code)."""

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> DriftAlert | None:
        """Take one record of `topic` (full name) into the view; return it if it is a new alert.
        A record that does not decode raises `EventDecodeError` and changes nothing."""
        name = topic.removeprefix(self.prefix)
        if name == DEPLOYMENTS.name:
            deployment = check_deployment(key, value, topic)
            _keep(self.deployments, key, deployment)
        elif name == STREAMS.name:
            _keep(self.streams, key, check_declaration(key, value, topic))
        elif name == ALERTS.name:
            alert = decode(DriftAlert, value, topic)
            _push(self.alerts, alert, self.history)
            return alert
        elif name == DECISIONS.name:
            _push(self.decisions, decode(PromotionDecision, value, topic), self.history)
        elif name == DEADLETTER.name:
            letter = decode(DeadLetter, value, topic)
            self.dead_letters[(letter.service, letter.code)] += 1
            self.dead_letter_reasons[(letter.service, letter.code)] = letter.reason
        elif name == PREDICTIONS_LABELED.name:
            self.errors.add(decode(LabeledPrediction, value, topic))
        elif name == FEATURES.name:
            event = decode(FeatureEvent, value, topic)
            self.distributions.add(event, self.streams.get(event.stream))
        return None

    def alert(self, alert_id: str) -> DriftAlert | None:
        """A kept alert by id."""
        return next((a for a in self.alerts if a.alert_id == alert_id), None)

    def open_alerts(self) -> list[DriftAlert]:
        """The newest alert of each key that is at the drift level, newest first: what an
        operator still has to look at."""
        latest: dict[str, DriftAlert] = {}
        for alert in self.alerts:
            latest[alert.key] = alert
        return sorted(
            (a for a in latest.values() if a.level == "drift" or a.escalated),
            key=lambda a: a.detected_at,
            reverse=True,
        )

    def trial(self, deployment: str) -> list[PromotionDecision]:
        """The decisions on a deployment's challengers, oldest first: each look of the policy
        with its numbers, and every operator's decision."""
        return [d for d in self.decisions if d.deployment == deployment]

    def alerts_of(self, deployment: Deployment) -> list[DriftAlert]:
        """Alerts on a deployment's models or on its stream, newest first."""
        return [
            a
            for a in reversed(self.alerts)
            if a.deployment == deployment.name
            or (a.kind == "data" and a.stream == deployment.stream)
        ]

    def stream_alerts(self, stream: str) -> list[DriftAlert]:
        """Data-drift alerts on a stream's features, newest first."""
        return [a for a in reversed(self.alerts) if a.kind == "data" and a.stream == stream]


def _keep(table: dict[str, object], key: bytes | None, record: object | None) -> None:
    name = (key or b"").decode()
    if record is None:
        table.pop(name, None)
    else:
        table[name] = record


def _push(kept: deque[object], item: object, most: int) -> None:
    kept.append(item)
    while len(kept) > most:
        kept.popleft()


def per_second(before: Counts | None, after: Counts | None, seconds: float) -> Counts | None:
    """Messages consumed and produced per second between two scrapes; None without both (or
    after a restart, when counters fall)."""
    if before is None or after is None or seconds <= 0:
        return None
    if after.consumed < before.consumed or after.produced < before.produced:
        return None
    return Counts(
        (after.consumed - before.consumed) / seconds, (after.produced - before.produced) / seconds
    )


@dataclass(frozen=True)
class ServiceRow:
    """One service on the launchpad."""

    service: str
    health: str
    rates: Counts | None
    lag: int | None
    """Messages its consumer group has not processed yet, over every topic; None if unknown."""


def lag_of(service: str, prefix: str, lag: Mapping[tuple[str, str], int]) -> int | None:
    """A service's total consumer lag (its group is ``<prefix>driftline-<service>``)."""
    found = [n for (group, _), n in lag.items() if group == f"{prefix}driftline-{service}"]
    return sum(found) if found else None


def first_event(starts: list[tuple[int, str | None]]) -> str | None:
    """The event id of a window's first record, from each partition's first record in the
    window as (timestamp ms, event id): the earliest one that names an event."""
    named = [start for start in starts if start[1] is not None]
    return min(named)[1] if named else None


POLICIES: dict[str, type[BaseModel]] = {"retrain": RetrainSpec, "promotion": PromotionPolicy}
"""A deployment's policies the form edits, by field of `Deployment`; the form names each of
their fields ``<policy>.<field>``."""


@dataclass(frozen=True)
class PolicyField:
    """One field of a policy as the form shows it."""

    policy: str
    name: str
    help: str
    """The field's docstring."""
    default: str

    @property
    def key(self) -> str:
        """The form field's name, e.g. ``promotion.min_samples``."""
        return f"{self.policy}.{self.name}"


def policy_fields() -> list[PolicyField]:
    """Every field of the policies, in the models' order, read from the models themselves so a
    new field appears in the form without touching it."""
    return [
        PolicyField(policy, name, info.description or "", _text(info.get_default()))
        for policy, model in POLICIES.items()
        for name, info in model.model_fields.items()
    ]


def _text(value: object) -> str:
    return "" if value is None else str(value)


def deployment_from_form(form: Mapping[str, str], live: Deployment | None) -> Deployment:
    """The deployment a console form describes, built by the CLI's own `deployment_from_options`
    (one rule or shadow per line, in the CLI's syntax; each policy field as text, a blank one
    takes its default); an existing deployment keeps its online models. A mistake raises one
    readable line."""
    weight_text = form.get("canary_weight", "").strip() or "0"
    try:
        weight = float(weight_text)
    except ValueError:
        raise DriftlineError(
            f"canary weight {weight_text!r}: expected a number from 0 to 1"
        ) from None
    policies = {
        policy: {
            name: text
            for name in model.model_fields
            if (text := form.get(f"{policy}.{name}", "").strip())
        }
        for policy, model in POLICIES.items()
    }
    deployment = deployment_from_options(
        form.get("name", "").strip(),
        form.get("stream", "").strip(),
        form.get("champion", "").strip(),
        form.get("canary", "").strip() or None,
        weight,
        _lines(form.get("rules", "")),
        _lines(form.get("shadows", "")),
        retrain=policies["retrain"],
        promotion=policies["promotion"],
    )
    if live is None:
        return deployment
    return deployment.model_copy(update={"online_models": live.online_models})


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def form_values(deployment: Deployment | None) -> dict[str, str]:
    """A deployment as the console's form shows it (the first canary only: the form has one);
    a new one shows the policies' defaults."""
    if deployment is None:
        defaults = {field.key: field.default for field in policy_fields()}
        return {"canary_weight": "0.1", **defaults}
    canary = next((v for v in deployment.variants if v.role == "canary"), None)
    rules = [
        f"{v.rule.field}{v.rule.op if v.rule.op != 'in' else ' in '}"
        f"{v.rule.value if isinstance(v.rule.value, str) else json.dumps(v.rule.value)}"
        f"={v.model_uri}"
        for v in deployment.variants
        if v.role == "rule" and v.rule is not None
    ]
    return {
        "name": deployment.name,
        "stream": deployment.stream,
        "champion": next(v.model_uri for v in deployment.variants if v.role == "champion"),
        "canary": canary.model_uri if canary else "",
        "canary_weight": str(canary.weight) if canary else "0.1",
        "rules": "\n".join(rules),
        "shadows": "\n".join(v.model_uri for v in deployment.variants if v.role == "shadow"),
        **{
            field.key: _text(getattr(getattr(deployment, field.policy), field.name))
            for field in policy_fields()
        },
    }
