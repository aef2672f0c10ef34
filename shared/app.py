"""The one Faust app factory every service uses, and the topic and dead-letter plumbing around it.

Messages travel as raw bytes: each agent decodes with `shared.events.decode`, so a malformed
message becomes a dead letter with its reason instead of an exception inside Faust's consumer.
"""

from __future__ import annotations

import functools
import gc
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import faust
from faust import streams as faust_streams
from faust.sensors.prometheus import setup_prometheus_sensors
from faust.streams import _current_event
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.types import EventT, TopicT
from faust.web import Request, Response, View

from shared import delivery, failpoints, metrics
from shared.delivery import DriftlineConsumer, DurableProducer, OutputsLostError
from shared.errors import DriftlineError, InternalError
from shared.events import DeadLetter, Event, encode
from shared.kafka_clients import KafkaAccess, faust_credentials
from shared.logging import batch_fields, get_logger, logging_config, message_fields
from shared.settings import DriftlineSettings, ServiceSettings
from shared.topics import DEADLETTER, Topic
from shared.worker import DriftlineWorker, log_uncaught_exceptions, ready

log = get_logger(__name__)

FETCH_MAX_WAIT_MS = 50
"""Longest a consumer's fetch waits at the broker for new records; faust-streaming writes in
1,500 ms. aiokafka keeps one fetch in flight per broker and leaves out of it every partition
whose fetched records have waited more than 100 ms for the worker; that fetch then asks only
the quiet partitions (tables' changelogs, deployments, snapshots) and waits the whole time at
the broker while new events queue behind it. A worker that once fell 100 ms behind repeated
that wait on every fetch: the standing 1.5 s latency of the benchmarks (issue 10)."""


def _with_short_fetch_wait(create: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(create)
    def create_worker_consumer(thread: AIOKafkaConsumerThread, transport: Any) -> Any:
        consumer = create(thread, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts
        return consumer

    return create_worker_consumer


AIOKafkaConsumerThread._create_worker_consumer = _with_short_fetch_wait(  # type: ignore[method-assign]
    AIOKafkaConsumerThread._create_worker_consumer
)


# Streams iterate in Python, as faust-streaming does with NO_CYTHON set: its Cython iterator
# inlines `Consumer.ack`, so `DriftlineConsumer.ack` never saw an `events()` stream's records.
# That path acknowledged the records a stream skipped during a rebalance (commits passed them:
# the loaded kill tests' losses in every `consume` agent), and its records never reached
# `StreamProgress`, whose commits then held at the first one for good.
faust_streams._CStreamIterator = None


class DriftlineApp(faust.App):
    """A Faust app whose producer is durable, whose commits wait for its sends and whose
    stream partitions are fetched without holes (see `shared.delivery`): Faust has no setting
    for the first two outside ``exactly_once``, none for the last."""

    kafka_access: KafkaAccess
    """How its clients reach the brokers: the worker's admin client connects the same way."""

    def _new_producer(self) -> DurableProducer:
        return DurableProducer(self.transport, loop=self.loop, beacon=self.beacon)

    def _new_consumer(self) -> DriftlineConsumer:
        return DriftlineConsumer(
            self.transport,
            callback=self.topics.on_message,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned,
            beacon=self.beacon,
            loop=self.transport.loop,
        )


def run_worker(app: DriftlineApp, loglevel: str, shutdown_grace_s: float = 20.0) -> None:
    """Run `app`'s Faust worker until it is stopped (see `shared.worker`: its internal topics
    are created first, its stop takes at most `shutdown_grace_s` after a signal, and every
    exception is one log record).

    What exists by now (libraries, models, the app) is moved out of the garbage collector's
    reach first: every full collection walked those objects, hundreds of thousands from MLflow,
    pandas and River, and stalled a worker for ~190 ms, long enough to set its p99 latency.
    """
    log_uncaught_exceptions()
    gc.collect()
    gc.freeze()
    DriftlineWorker(
        app, loglevel=loglevel, shutdown_grace_s=shutdown_grace_s
    ).execute_from_commandline()


def create_app(service: str, common: DriftlineSettings, own: ServiceSettings) -> DriftlineApp:
    """A Faust app for `service`: its own consumer group, table store, web port and metrics.
    Refuses the public development keys unless they are allowed (`require_secret_keys`)."""
    common.require_secret_keys()
    access = KafkaAccess.of(common)
    datadir = common.data_dir / service
    datadir.mkdir(parents=True, exist_ok=True)
    app = DriftlineApp(
        f"{common.topic_prefix}driftline-{service}",
        broker=common.faust_broker,
        broker_credentials=faust_credentials(access),
        store=common.store,
        topic_partitions=common.topic_partitions,
        topic_replication_factor=common.topic_replication_factor,
        processing_guarantee=common.processing_guarantee,
        datadir=str(datadir),
        web_host=common.web_host,
        web_bind=common.web_host,
        web_port=own.web_port,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=common.kafka_session_timeout_s,
        # A topic that appears after the first rebalance (the worker creates its internal
        # topics before it starts, but a repartition topic or a public topic created late
        # cannot be) is seen, and rejoined for, in seconds instead of the 5-minute default.
        consumer_metadata_max_age_ms=5_000,
        producer_linger_ms=5,
        worker_redirect_stdouts=False,
        logging_config=logging_config(service, common.log_level, common.log_format),
    )
    app.kafka_access = access
    setup_prometheus_sensors(app, name_prefix="faust")
    metrics.show_build_info(service)
    metrics.WORKER_READY.labels(service).set_function(lambda: float(ready(app)))

    @app.page("/health")
    async def health(self: View, request: Request) -> Response:
        """Readiness: 200 once table recovery finished and while no rebalance runs, else 503."""
        serving = ready(app)
        body = {"service": service, "status": "ok" if serving else "recovering"}
        return self.json(body, status=200 if serving else 503)

    @app.page("/live")
    async def live(self: View, request: Request) -> Response:
        """Liveness: 200 whenever the event loop answers, also while tables recover after a
        rebalance, which can take longer than any liveness timeout should allow."""
        return self.json({"service": service, "status": "alive"})

    return app


def declare_topic(app: faust.App, topic: Topic, common: DriftlineSettings) -> TopicT:
    """The Faust topic for one of `shared.topics`, with its partitions and cleanup policy."""
    return app.topic(
        topic.full_name(common),
        partitions=topic.partitions(common),
        config=topic.config(),
        key_serializer="raw",
        value_serializer="raw",
    )


class DeadLetters:
    """Sends what a service cannot use to ``deadletter``, with the reason, and counts it."""

    def __init__(self, app: faust.App, service: str, common: DriftlineSettings) -> None:
        self.service = service
        self.topic = declare_topic(app, DEADLETTER, common)

    async def send(self, event: EventT, error: DriftlineError) -> None:
        """Dead-letter the message behind `event` (its original bytes, topic, partition, offset)
        for `error`."""
        message = event.message
        await self.send_letter(
            DeadLetter(
                reason=str(error),
                code=error.code,
                service=self.service,
                source_topic=message.topic,
                partition=message.partition,
                offset=message.offset,
                key=message.key,
                value=message.value or b"",
            )
        )

    async def send_letter(self, letter: DeadLetter) -> None:
        """Dead-letter a message kept earlier (e.g. feedback that waited for its prediction in
        vain), with its original topic, partition and offset already in `letter`."""
        await self.topic.send(key=letter.source_topic.encode(), value=encode(letter))
        metrics.child(metrics.DEAD_LETTERS, self.service, letter.source_topic, letter.code).inc()
        log.warning(
            "dead-lettered",
            reason=letter.reason,
            code=letter.code,
            **message_fields(letter.source_topic, letter.partition, letter.offset, letter.value),
        )


Handler = Callable[[EventT], Awaitable[Any]]


async def consume(
    stream: faust.Stream, service: str, dead_letters: DeadLetters, handle: Handler
) -> None:
    """Run `handle` on every event of `stream`; a failure dead-letters that message and goes on.

    A `DriftlineError` is an expected bad input; any other exception is a bug or a failing
    model, logged with its traceback, and the message is still dead-lettered so nothing is lost.
    """
    processing = metrics.child(metrics.PROCESSING_SECONDS, service)
    next_in_order = in_order(stream)
    async for event in stream.events():
        if not next_in_order(event):
            continue
        message = event.message
        metrics.child(metrics.EVENTS_IN, service, message.topic).inc()
        started = time.monotonic()
        with unacknowledged_if_interrupted(stream, [event]):
            try:
                await handle(event)
            except Exception as exc:
                await dead_letters.send(event, rejection(event, exc))
        _observe_processing(processing, [event], started)


def in_order(stream: faust.Stream) -> Callable[[EventT], bool]:
    """The check, resolved once per stream as it runs for every event, whether an event of
    `stream` is the next record of its partition, which the stream may process now; one that
    came too early is left for a refetch (`DriftlineConsumer.take`)."""
    consumer = stream.app.consumer
    if not isinstance(consumer, DriftlineConsumer):
        return lambda event: True
    take, prefix = consumer.take, stream.prefix
    return lambda event: take(event.message, prefix)


@contextmanager
def unacknowledged_if_interrupted(stream: faust.Stream, events: Sequence[EventT]) -> Iterator[None]:
    """Leave `events` unacknowledged if their handling ends in an exception (an agent cancelled
    at a stop or a rebalance, a dead letter that could not be sent): faust-streaming would
    acknowledge them as the stream closes, and a commit would pass records never handled."""
    try:
        yield
    except BaseException:
        consumer = stream.app.consumer
        if isinstance(consumer, DriftlineConsumer):
            consumer.abandon((event.message for event in events), stream.prefix)
        raise


def rejection(event: EventT, exc: Exception) -> DriftlineError:
    """The error to dead-letter `event` for, from what a handler raised on it (call it in the
    `except`): a `DriftlineError` is bad input; anything else is a bug or a failing model,
    logged with its traceback, an `InternalError`."""
    if isinstance(exc, DriftlineError):
        return exc
    message = event.message
    log.exception(
        "handler failed",
        **message_fields(message.topic, message.partition, message.offset, message.value),
    )
    return InternalError(exc)


BatchHandler = Callable[[Sequence[EventT]], Awaitable[Sequence[tuple[EventT, DriftlineError]]]]
"""Handles a micro-batch; returns the events it could not use, each with the error why."""


async def consume_batches(
    stream: faust.Stream,
    service: str,
    dead_letters: DeadLetters,
    handle: BatchHandler,
    max_events: int,
    within_seconds: float,
) -> None:
    """Run `handle` on micro-batches of `stream` (up to `max_events`, or what came within
    `within_seconds`), so per-event costs are paid once per batch; bad events are dead-lettered
    with their reasons and the rest of the batch flows.

    Faust acks a batch when the loop comes back for the next one, after `handle` has given
    every output and dead letter to the producer, which a commit flushes first: at least once.
    A batch whose handler raises is handled again event by event, so only the events that
    raise are dead-lettered (outputs sent before the error may be sent twice), unless its
    outputs were lost (`OutputsLostError`): then the worker stops and replays the batch.
    """
    processing = metrics.child(metrics.PROCESSING_SECONDS, service)
    next_in_order = in_order(stream)
    async for taken in stream.take_events(max_events, within_seconds):
        events = [event for event in taken if next_in_order(event)]
        if not events:
            continue
        started = time.monotonic()
        for event in events:
            metrics.child(metrics.EVENTS_IN, service, event.message.topic).inc()
        with unacknowledged_if_interrupted(stream, events):
            try:
                rejected = await handle(events)
            except OutputsLostError:
                raise  # the worker is stopping; the batch is replayed from the last commit
            except Exception:
                log.exception(
                    "batch handler failed; handling its events one by one",
                    **batch_fields(
                        (e.message.topic, e.message.partition, e.message.offset) for e in events
                    ),
                )
                rejected = [r for event in events for r in await _handle_alone(event, handle)]
            for event, error in rejected:
                await dead_letters.send(event, error)
        _observe_processing(processing, events, started)


def _observe_processing(histogram: Any, events: Sequence[EventT], started: float) -> None:
    """One observation per event, from its receipt (the `time_in` Faust's monitor stamps with
    `time.monotonic` as the consumer hands it over; `started` where none is) to now: a batch's
    wait and its handling both count, so the p99 is an event's, not a batch average."""
    now = time.monotonic()
    for event in events:
        received = event.message.time_in
        histogram.observe(now - (started if received is None else received))


@contextmanager
def as_current_event(event: EventT) -> Iterator[None]:
    """Make `event` the current one for table reads and writes in this task.

    Faust writes a table key to the changelog partition of the current event; after a
    micro-batch (`take_events`) that must be an event of the key's own partition. Only the
    context variable the tables read is set: the stream's own `current_event` tells
    `take_events` which event a buffered value belongs to, and changing it would swap a waiting
    message for an old one.
    """
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


async def outputs_delivered(app: faust.AppT) -> None:
    """Wait until the batch's outputs are acknowledged, before writing the state that records
    them (see `shared.delivery.outputs_delivered`); the failpoint ``outputs-delivered`` stops
    the worker right there, for fault tests."""
    await delivery.outputs_delivered(app)
    failpoints.reached("outputs-delivered")


class BufferedTable:
    """A bytes table's writes held back until a micro-batch's outputs are delivered.

    Reads see the batch's own writes first; `write` then applies each one under the event that
    made it, whose partition is the key's changelog partition.
    """

    def __init__(self, table: Any) -> None:
        self.table = table
        self._changes: dict[bytes, tuple[bytes | None, EventT]] = {}

    def get(self, key: bytes) -> bytes | None:
        """The value of `key` as the batch left it."""
        if key in self._changes:
            return self._changes[key][0]
        return self.table.get(key)

    def put(self, key: bytes, value: bytes | None, event: EventT) -> None:
        """Set (None: delete) `key`, in the changelog partition of `event`."""
        self._changes[key] = (value, event)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, value) as the batch left them."""
        for key, value in list(self.table.items()):
            if key not in self._changes:
                yield key, value
        for key, (change, _) in self._changes.items():
            if change is not None:
                yield key, change

    def write(self) -> None:
        """Apply the batch's writes to the table (after `outputs_delivered`)."""
        for key, (value, event) in self._changes.items():
            with as_current_event(event):
                if value is not None:
                    self.table[key] = value
                elif key in self.table:
                    del self.table[key]
        self._changes.clear()


async def _handle_alone(
    event: EventT, handle: BatchHandler
) -> Sequence[tuple[EventT, DriftlineError]]:
    try:
        return await handle([event])
    except OutputsLostError:
        raise
    except Exception as exc:
        return [(event, rejection(event, exc))]


async def send_event(topic: TopicT, service: str, key: str, event: Event) -> None:
    """Produce one record (JSON) with a text key, and count it."""
    await topic.send(key=key.encode(), value=encode(event))
    metrics.child(metrics.EVENTS_OUT, service, topic.get_topic_name()).inc()


async def send_records(topic: TopicT, service: str, records: Sequence[tuple[bytes, bytes]]) -> None:
    """Give encoded records (key, value) to the app's producer without waiting for delivery
    (the next commit waits for it, and a failed one stops the commit: `shared.delivery`), and
    count them; Faust's `Topic.send` machinery costs more per record than the producer itself."""
    name = topic.get_topic_name()
    for key, value in records:
        await _produce(topic.app, name, key, value)
    metrics.child(metrics.EVENTS_OUT, service, name).inc(len(records))


async def _produce(app: faust.AppT, topic: str, key: bytes, value: bytes) -> None:
    await app.producer.send(topic, key, value, partition=None, timestamp=None, headers=None)
