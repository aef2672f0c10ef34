"""The worker process around a Driftline Faust app: what happens before it starts, what ready
means, and how it ends.

- Before the app starts, every topic its worker would create for itself (tables' changelogs,
  windowed ones included, and the internal topics its agents read) is created with an admin
  client and listed by the broker. Faust creates them too, but concurrently with its first
  rebalance: when the assignor's metadata did not list them yet it skipped them ("Ignoring
  missing topic"), and recovery waited for partitions nobody was assigned.
- Ready (`ready`) means table recovery finished and no rebalance is under way.
- Stopping is bounded: once SIGTERM or SIGINT arrives (or the worker stops for any other
  reason), a watchdog ends the process after a grace period, since a consumer whose broker is
  gone can wait on retry backoff forever.
- Every exception reaches the log as one record: ``mode`` would redirect stdout and stderr into
  the log one write at a time (a traceback became hundreds of records), so the redirect is off
  and uncaught exceptions, in any thread, go through the logger.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any

import faust
from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaError
from faust.types import TopicT
from mode.utils.times import want_seconds

from shared.admin import ensure_topics
from shared.logging import get_logger

if TYPE_CHECKING:
    from shared.app import DriftlineApp

log = get_logger(__name__)

CANNOT_USE_KAFKA_EXIT = 2
"""Exit status of a worker the brokers refused (or never answered) before it started."""
SHUTDOWN_TIMED_OUT_EXIT = 70
"""Exit status of a worker the watchdog ended (``EX_SOFTWARE``): its stop did not finish."""


def internal_topics(app: faust.AppT) -> list[NewTopic]:
    """The topics `app`'s worker creates for itself, as Faust would declare them: each table's
    changelog (compacted; windowed tables' also deleting after the window expires), the
    leader assignor's topic and every internal topic an agent reads, with the app's partition
    count unless one is set. Public topics are left out: ``driftline topics create`` makes
    them. A ``group_by`` repartition topic is made when its stream is first iterated, so it
    is not known here (no service re-keys a stream)."""
    channels: list[TopicT] = [table.changelog_topic for table in app.tables.values()]
    if not app.conf.topic_disable_leader:
        channels.append(app._leader_assignor._leader_topic)  # type: ignore[attr-defined]
    for agent in app.agents.values():
        channel = agent.channel
        if isinstance(channel, TopicT) and channel.internal:
            channels.append(channel)
    conf = app.conf
    found: dict[str, NewTopic] = {}
    for channel in channels:
        for name in channel.topics:
            found[name] = NewTopic(
                name=name,
                num_partitions=channel.partitions or conf.topic_partitions,
                replication_factor=channel.replicas or conf.topic_replication_factor,
                topic_configs=_topic_config(channel),
            )
    return [found[name] for name in sorted(found)]


def _topic_config(channel: TopicT) -> dict[str, str]:
    """The topic-level config Faust's Kafka transport creates `channel` with."""
    policies = [
        p for p, on in (("compact", channel.compacting), ("delete", channel.deleting)) if on
    ]
    config: dict[str, str] = {}
    if policies:
        config["cleanup.policy"] = ",".join(policies)
    if channel.retention:
        config["retention.ms"] = str(int(want_seconds(channel.retention) * 1000))
    config.update((key, str(value)) for key, value in channel.config.items())
    return config


async def create_internal_topics(app: DriftlineApp, timeout: float = 60.0) -> list[str]:
    """Create `app`'s internal topics that do not exist yet and wait until the broker lists all
    of them; return the names created."""
    wanted = internal_topics(app)
    created = await ensure_topics(app.kafka_access, wanted, timeout=timeout)
    log.info("internal topics ready", topics=[t.name for t in wanted], created=created)
    return created


def ready(app: faust.AppT) -> bool:
    """Whether `app`'s worker serves its partitions now: table recovery has completed and no
    rebalance is under way (partitions may move, and recovery starts over after it)."""
    recovered = app.tables.recovery.completed.is_set() if app.tables else True
    return recovered and not app.rebalancing


class ShutdownWatchdog:
    """Ends the process `grace_s` seconds after `start` unless it exited before."""

    def __init__(self, grace_s: float) -> None:
        self.grace_s = grace_s
        self._timer: threading.Timer | None = None
        self._lock = threading.Lock()

    def start(self, reason: str) -> None:
        """Start counting (once; later calls keep the first deadline)."""
        with self._lock:
            if self._timer is None:
                self._timer = threading.Timer(self.grace_s, self._expire, args=(reason,))
                self._timer.daemon = True
                self._timer.start()

    def _expire(self, reason: str) -> None:
        log.error(
            "worker did not stop in time; exiting without a clean stop",
            grace_s=self.grace_s,
            stopping_because=reason,
        )
        for handler in logging.getLogger().handlers:
            # a stream closed under us (a pipe whose reader is gone) must not keep the process
            # alive: the exit is what this is for, and there is nowhere left to report to
            with contextlib.suppress(OSError, ValueError):
                handler.flush()
        os._exit(SHUTDOWN_TIMED_OUT_EXIT)


def log_uncaught_exceptions() -> None:
    """Send exceptions nobody caught, in the main thread and in any other, to the logger as one
    record each (with the traceback) instead of printing them."""
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_uncaught_in_thread
    logging.captureWarnings(True)


def _log_uncaught(
    kind: type[BaseException], exc: BaseException, traceback: TracebackType | None
) -> None:
    log.critical("uncaught exception", exc_info=(kind, exc, traceback))


def _log_uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None or issubclass(args.exc_type, SystemExit):
        return
    log.critical(
        "uncaught exception in thread",
        thread=args.thread.name if args.thread else None,
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )


class DriftlineWorker(faust.Worker):
    """Faust's worker with the start, stop and logging behaviour of the module's docstring."""

    app: DriftlineApp

    def __init__(
        self, app: DriftlineApp, *, loglevel: str, shutdown_grace_s: float, **kwargs: Any
    ) -> None:
        super().__init__(app, loglevel=loglevel, redirect_stdouts=False, quiet=True, **kwargs)
        self.spinner = None  # writes terminal codes to stdout, outside the log
        self.watchdog = ShutdownWatchdog(shutdown_grace_s)

    async def on_execute(self) -> None:
        """Before the app starts: its internal topics exist and are listed. A broker that
        refuses this worker (wrong password, CA or address) ends it here with one error record
        and exit status 2: aiokafka's record before it names the reason."""
        await super().on_execute()
        try:
            await create_internal_topics(self.app)
        except KafkaError as exc:
            access = self.app.kafka_access
            log.error(
                "cannot use Kafka; check the DRIFTLINE_KAFKA_* settings",
                broker=access.bootstrap_servers,
                user=access.sasl_username,
                security_protocol=access.security_protocol,
                error=f"{type(exc).__name__}: {exc}",
            )
            raise SystemExit(CANNOT_USE_KAFKA_EXIT) from None

    def _on_sigterm(self) -> None:
        self.watchdog.start("SIGTERM")
        super()._on_sigterm()

    def _on_sigint(self) -> None:
        self.watchdog.start("SIGINT")
        super()._on_sigint()

    def on_worker_shutdown(self) -> None:
        """The worker stops (signal, crash or failed start): its stop is bounded too."""
        self.watchdog.start("worker stopping")
        super().on_worker_shutdown()
