"""Fixtures for all tiers. The integration tier starts the real broker once per run (or reuses
one that answers on DRIFTLINE_TEST_KAFKA_PORT) and gives each test its own topic prefix."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from shared.localkafka import LocalKafka
from shared.localmlflow import LocalMlflow
from tests.support.pipeline import FAILED, Pipeline, failed

if TYPE_CHECKING:
    from tests.support.mlserver import LocalMlserver

# Tests run with the public development keys; every worker they start inherits this. A test of
# the refusal turns it off explicitly.
os.environ.setdefault("DRIFTLINE_ALLOW_DEFAULT_KEYS", "true")


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """``host:port`` of a real Kafka broker for this test run."""
    broker = LocalKafka(port=int(os.environ.get("DRIFTLINE_TEST_KAFKA_PORT", "19092")))
    already_up = broker.is_up(timeout=1.0)
    if not already_up:
        broker.start()
    yield broker.bootstrap
    if not already_up:
        broker.stop()


@pytest.fixture(scope="session")
def secure_kafka() -> Iterator[LocalKafka]:
    """A broker of its own with TLS, SASL/SCRAM-SHA-512 and ACLs (``driftline kafka start
    --secure``) on DRIFTLINE_TEST_SECURE_KAFKA_PORT (29094) and the port after it, made afresh
    for this run and stopped after it, whatever failed."""
    port = int(os.environ.get("DRIFTLINE_TEST_SECURE_KAFKA_PORT", "29094"))
    broker = LocalKafka(port=port, controller_port=port + 1, secure=True)
    broker.stop()  # one a crashed run left behind
    shutil.rmtree(broker.workdir, ignore_errors=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(broker.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlflow]:
    """A real MLflow server (SQLite, basic auth) started for this test run. Its credentials are
    in this process's environment meanwhile, as a deployment sets them: every MLflow client of
    the tests and of the processes they start uses them."""
    server = LocalMlflow(
        port=int(os.environ.get("DRIFTLINE_TEST_MLFLOW_PORT", "15000")),
        home=tmp_path_factory.mktemp("mlflow"),
    )
    credentials = server.client_env()
    before = {name: os.environ.get(name) for name in credentials}
    os.environ.update(credentials)
    try:
        server.start()
        yield server
    finally:
        server.stop()
        for name, value in before.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture(scope="session")
def mlflow_uri(mlflow_server: LocalMlflow) -> str:
    """Tracking URI of the test run's MLflow server."""
    return mlflow_server.uri


@pytest.fixture(scope="session")
def mlserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalMlserver]:
    """A real MLServer (scikit-learn runtime) for this test run, on DRIFTLINE_TEST_MLSERVER_PORT
    (18081; gRPC on the next port, no metrics server), serving `V2_MODEL`: a classifier of
    ``amount > 0.5`` trained here. Stopped at the end, whatever failed; a test may kill and
    restart it."""
    # scikit-learn only for the runs that serve a model, not for every test run's start
    from tests.support.mlserver import V2_MODEL, LocalMlserver, threshold_model, write_model

    repository = tmp_path_factory.mktemp("mlserver") / "models"
    write_model(repository, threshold_model(V2_MODEL, cut=0.5))
    port = int(os.environ.get("DRIFTLINE_TEST_MLSERVER_PORT", "18081"))
    server = LocalMlserver(repository, http_port=port, grpc_port=port + 1)
    try:
        server.start([V2_MODEL])
        yield server
    finally:
        server.stop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[pytest.TestReport]:
    """A failed test's report ends with the tail of every worker log of its pipelines: a CI
    failure is diagnosable from the printed output alone; its topics are kept."""
    report: pytest.TestReport = yield
    if not report.failed:
        return report
    item.stash[FAILED] = True
    for pipeline in getattr(item, "funcargs", {}).values():
        if isinstance(pipeline, Pipeline):
            for worker in pipeline.workers:
                report.sections.append((f"log of {worker.log_path.name}", worker.tail(40)))
    return report


@pytest.fixture
def pipeline(
    kafka_bootstrap: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Pipeline]:
    """A private Driftline on the real broker; its workers are stopped after the test and its
    topics deleted unless it failed."""
    pipe = Pipeline(kafka_bootstrap, tmp_path)
    yield pipe
    pipe.close(keep_topics=failed(request))
