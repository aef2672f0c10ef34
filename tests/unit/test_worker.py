"""The worker around an app (`shared.worker`): which internal topics it creates before it starts,
what ready means, the shutdown watchdog, one log record per uncaught exception."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import shared.worker
from services.drift.app import build as build_drift
from services.learner.app import build as build_learner
from shared.app import create_app
from shared.logging import logging_config
from shared.settings import DriftlineSettings, DriftSettings, IngestionSettings, LearnerSettings
from shared.worker import DriftlineWorker, ShutdownWatchdog, internal_topics, ready
from tests.support.faust_doubles import isolate_prometheus


def test_internal_topics_are_the_changelogs_leader_topic_and_internal_agent_topics(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    common = DriftlineSettings(data_dir=tmp_path, topic_prefix="p.", topic_partitions=3)
    app = build_drift(common, DriftSettings())

    topics = {topic.name: topic for topic in internal_topics(app)}

    app_id = "p.driftline-drift"
    assert set(topics) == {
        f"{app_id}-__assignor-__leader",
        f"{app_id}-deployments-changelog",
        f"{app_id}-feature-values",
        f"{app_id}-feature_to_monitor-changelog",
        f"{app_id}-model_errors_hopping-changelog",
        f"{app_id}-model_errors_tumbling-changelog",
        f"{app_id}-model_to_monitor-changelog",
        f"{app_id}-promotion_trials-changelog",
    }
    assert set(topics) == {t.changelog_topic_name for t in app.tables.values()} | {
        f"{app_id}-__assignor-__leader",
        f"{app_id}-feature-values",
    }
    changelog = topics[f"{app_id}-feature_to_monitor-changelog"]
    assert changelog.num_partitions == 3
    assert changelog.topic_configs == {"cleanup.policy": "compact"}
    assert topics[f"{app_id}-deployments-changelog"].num_partitions == 1  # a global table's
    assert topics[f"{app_id}-__assignor-__leader"].num_partitions == 1
    window = topics[f"{app_id}-model_errors_hopping-changelog"].topic_configs
    expires = app.tables["model_errors_hopping"].window.expires
    assert window == {
        "cleanup.policy": "compact,delete",
        "retention.ms": str(int(expires * 1000)),
    }
    assert topics[f"{app_id}-feature-values"].num_partitions == 3


def test_the_learners_training_examples_topic_is_created_before_it_starts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = build_learner(DriftlineSettings(data_dir=tmp_path, topic_prefix="p."), LearnerSettings())

    names = [topic.name for topic in internal_topics(app)]

    assert "p.driftline-learner-training-examples" in names
    assert "p.driftline-learner-model_state-changelog" in names
    assert not any(name.startswith("p.predictions") for name in names)  # public: not its own


def test_ready_means_recovered_and_not_rebalancing(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = create_app("factory", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    app.Table("some_table")
    assert not ready(app)  # recovery has not run

    app.tables.recovery.completed.set()
    assert ready(app)

    app.rebalancing = True
    assert not ready(app)


def test_the_worker_does_not_redirect_stdout_into_the_log(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = create_app("factory", DriftlineSettings(data_dir=tmp_path), IngestionSettings())
    assert app.conf.worker_redirect_stdouts is False

    worker = DriftlineWorker(app, loglevel="info", shutdown_grace_s=7.0)

    assert worker.redirect_stdouts is False
    assert worker.spinner is None
    assert worker.watchdog.grace_s == 7.0


def test_the_watchdog_ends_the_process_after_the_grace_period(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    exited = threading.Event()
    codes: list[int] = []

    def fake_exit(code: int) -> None:
        codes.append(code)
        exited.set()

    monkeypatch.setattr(shared.worker.os, "_exit", fake_exit)
    watchdog = ShutdownWatchdog(grace_s=0.05)
    watchdog.start("SIGTERM")
    watchdog.start("SIGTERM again")  # keeps the first deadline, starts no second timer

    assert exited.wait(5)
    assert codes == [shared.worker.SHUTDOWN_TIMED_OUT_EXIT]


def test_the_watchdog_exits_even_when_its_log_stream_is_closed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker whose stderr pipe lost its reader must still exit: flushing the closed stream
    raised in the timer thread, and the process stayed."""
    exited = threading.Event()
    monkeypatch.setattr(shared.worker.os, "_exit", lambda code: exited.set())
    closed = io.StringIO()
    closed.close()
    handler = logging.StreamHandler(closed)
    logging.getLogger().addHandler(handler)
    try:
        ShutdownWatchdog(grace_s=0.01).start("SIGTERM")
        assert exited.wait(5)
    finally:
        logging.getLogger().removeHandler(handler)


def test_an_uncaught_exception_in_a_thread_is_one_log_record(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    logging_config("test")  # structlog through the standard library, as in a worker
    monkeypatch.setattr(shared.worker.sys, "excepthook", shared.worker.sys.excepthook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    try:
        shared.worker.log_uncaught_exceptions()

        def fail() -> None:
            raise RuntimeError("boom in a thread")

        thread = threading.Thread(target=fail, name="failing")
        thread.start()
        thread.join()
    finally:
        logging.captureWarnings(False)

    records = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert len(records) == 1
    record = records[0]
    # structlog, once configured, renders the traceback into the message; else it is exc_info
    text = str(record.msg) + (
        logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
    )
    assert "uncaught exception in thread" in text
    assert "Traceback" in text
    assert "RuntimeError: boom in a thread" in text


@pytest.mark.parametrize("app", ["services.drift.app", "services.learner.app"])
def test_a_worker_starts_without_mlflow_or_river_example_datasets(app: str) -> None:
    """MLflow's import is about a quarter of a drift worker's start (the app imports it only
    when a trial's decision runs); river.drift's example datasets (scikit-learn, SQLAlchemy)
    another third, for data no service reads."""
    heavy = "{'mlflow', 'sklearn', 'sqlalchemy'}"
    loaded = subprocess.run(
        [sys.executable, "-c", f"import sys, {app}; print(*sorted({heavy} & set(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert loaded.stdout.strip() == ""
