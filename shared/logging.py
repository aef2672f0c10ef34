"""structlog JSON logging for every service; Faust's and aiokafka's logs are routed through it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import orjson
import structlog

_PRE_CHAIN: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]


def logging_config(service: str, level: str = "info", fmt: str = "json") -> dict[str, Any]:
    """A `logging.config.dictConfig` that renders every record (ours and libraries') alike.

    Faust's worker applies it itself (`logging_config` setting), so its own setup does not undo it.
    """
    renderer = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *_PRE_CHAIN,
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    _add_service(service),
                    structlog.processors.format_exc_info,
                    renderer,
                ],
                "foreign_pre_chain": _PRE_CHAIN,
            }
        },
        "handlers": {
            "default": {"class": "logging.StreamHandler", "formatter": "structlog"},
        },
        "root": {"handlers": ["default"], "level": level.upper()},
        # propagate: a process whose CLI held aiokafka's records back (shared.client_logs) logs them
        "loggers": {"aiokafka": {"level": "WARNING", "propagate": True}},
    }


def configure_logging(service: str, level: str = "info", fmt: str = "json") -> None:
    """Apply :func:`logging_config` now (CLI commands and tests that run no Faust worker)."""
    import logging.config

    logging.config.dictConfig(logging_config(service, level, fmt))


def message_fields(
    topic: str, partition: int, offset: int, value: bytes | None = None
) -> dict[str, Any]:
    """The fields every log line about one message carries, so it can be found again: where it
    is and, when its bytes (`value`) are a JSON event with one, its business ``event_id``, the
    id operators search by (`driftline trace`).

    Examples
    --------
    >>> message_fields("features", 3, 42, b'{"event_id": "ev-7", "stream": "pay"}')
    {'topic': 'features', 'partition': 3, 'offset': 42, 'event_id': 'ev-7'}
    >>> message_fields("features", 3, 43, b"not json")
    {'topic': 'features', 'partition': 3, 'offset': 43}

    """
    fields: dict[str, Any] = {"topic": topic, "partition": partition, "offset": offset}
    event_id = _event_id_of(value)
    if event_id is not None:
        fields["event_id"] = event_id
    return fields


def _event_id_of(value: bytes | None) -> str | None:
    """The ``event_id`` of a JSON event's bytes; None when they are not one or have none (such
    messages are the ones that fail, so nothing about them is assumed)."""
    if not value:
        return None
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    event_id = decoded.get("event_id") if isinstance(decoded, dict) else None
    return event_id if isinstance(event_id, str) else None


def batch_fields(messages: Iterable[tuple[str, int, int]]) -> dict[str, Any]:
    """The fields a log line about a batch of messages (topic, partition, offset each) carries:
    how many, and the first and last offset per ``topic[partition]``.

    Examples
    --------
    >>> batch_fields([("features", 0, 7), ("features", 1, 3), ("features", 0, 9)])
    {'messages': 3, 'offsets': {'features[0]': [7, 9], 'features[1]': [3, 3]}}

    """
    offsets: dict[str, list[int]] = {}
    count = 0
    for topic, partition, offset in messages:
        count += 1
        first_last = offsets.setdefault(f"{topic}[{partition}]", [offset, offset])
        first_last[0], first_last[1] = min(first_last[0], offset), max(first_last[1], offset)
    return {"messages": count, "offsets": offsets}


def _add_service(service: str) -> Any:
    def add(_: logging.Logger, __: str, event: dict[str, Any]) -> dict[str, Any]:
        event.setdefault("service", service)
        return event

    return add


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    """A structlog logger for a module."""
    return structlog.get_logger(name)
