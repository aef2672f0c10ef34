"""A private Driftline per test on the shared broker: its own topic prefix, groups and workers."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest

from services.processes import ServiceStartError, stop_all
from shared.admin import create_topics, delete_prefixed_topics
from shared.settings import DriftlineSettings
from shared.topics import Topic
from tests.support.workers import Worker

FAILED = pytest.StashKey[bool]()
"""Set on a test item by the report hook of tests/conftest.py when its call failed."""


def failed(request: pytest.FixtureRequest) -> bool:
    """Whether the test that requested the fixture failed (its topics are kept as evidence)."""
    return request.node.stash.get(FAILED, False)


class Pipeline:
    """Topic names, settings and worker processes for one test; `close` stops the workers."""

    def __init__(
        self,
        bootstrap: str,
        workdir: Path,
        partitions: int = 2,
        kafka_env: Mapping[str, str] | None = None,
        prefix: str | None = None,
    ) -> None:
        """`kafka_env` (DRIFTLINE_KAFKA_* variables) connects the test's own clients and every
        worker, unless a worker's start gives its own: a secured broker's operator, say.
        `prefix` (random by default) names the test's topics and groups."""
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.prefix = prefix or f"t{uuid.uuid4().hex[:10]}."
        self.env = {
            "DRIFTLINE_KAFKA_BROKER": bootstrap,
            "DRIFTLINE_TOPIC_PREFIX": self.prefix,
            "DRIFTLINE_TOPIC_PARTITIONS": str(partitions),
            "DRIFTLINE_DATA_DIR": str(workdir / "data"),
            "DRIFTLINE_LOG_LEVEL": "info",
            # A killed worker's successor gets its partitions after 10 s instead of 45 s.
            "DRIFTLINE_KAFKA_SESSION_TIMEOUT_S": "10",
            **(kafka_env or {}),
        }
        self.settings = DriftlineSettings(
            **{name.removeprefix("DRIFTLINE_").lower(): value for name, value in self.env.items()}
        )
        self.workers: list[Worker] = []
        asyncio.run(create_topics(self.settings))

    def topic(self, topic: Topic) -> str:
        """The topic's full name in this test's Driftline."""
        return topic.full_name(self.settings)

    def start(self, service: str, **extra_env: str) -> Worker:
        """Start `driftline <service> worker` and wait until it is healthy."""
        worker = Worker(
            service,
            {**self.env, **extra_env},
            self.workdir / f"{service}-{len(self.workers)}.log",
        )
        self.workers.append(worker)
        try:
            return worker.start()
        except ServiceStartError as exc:
            raise AssertionError(f"{exc}:\n{worker.tail()}") from None

    def start_together(self, services: Mapping[str, Mapping[str, str]]) -> list[Worker]:
        """Start several workers at once (service -> its extra environment) and wait until each
        is healthy: their start-ups overlap instead of adding up."""
        started = [
            Worker(
                service,
                {**self.env, **extra_env},
                self.workdir / f"{service}-{len(self.workers) + i}.log",
            )
            for i, (service, extra_env) in enumerate(services.items())
        ]
        self.workers.extend(started)
        for worker in started:
            worker.spawn()
        for worker in started:
            try:
                worker.wait_ready()
            except ServiceStartError as exc:
                raise AssertionError(f"{exc}:\n{worker.tail()}") from None
        return started

    def driftline(self, *args: str, **extra_env: str) -> subprocess.CompletedProcess[str]:
        """Run the `driftline` command (its real entry point: errors are one line on stderr and
        exit 2) against this test's Driftline."""
        return subprocess.run(
            [sys.executable, "-m", "services.cli", *args],
            capture_output=True,
            text=True,
            env={**os.environ, **self.env, "COLUMNS": "200", **extra_env},
            timeout=120,
            check=False,
        )

    def close(self, keep_topics: bool = False) -> None:
        """Stop every worker this test started, then delete the test's topics unless
        `keep_topics` (a failed test's records are the evidence): a run's broker stays as small
        as a fresh one instead of gathering thousands of partitions."""
        stop_all(self.workers)
        if not keep_topics:
            asyncio.run(delete_prefixed_topics(self.settings, self.prefix))
