"""The durable producer's bookkeeping (`shared.delivery`): every send is remembered until the
broker answers it, and a commit waits for them all and refuses to pass over one that failed.
On the real broker: tests/integration/test_worker_lifecycle.py."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka.errors import MessageSizeTooLargeError

from shared.app import create_app
from shared.delivery import (
    DURABLE_PRODUCER_SETTINGS,
    CommitGatedConsumer,
    Deliveries,
    DeliveryFailedError,
    DurableProducer,
)
from shared.settings import DriftlineSettings, IngestionSettings
from tests.support.faust_doubles import isolate_prometheus


async def test_every_app_has_an_idempotent_acks_all_producer_and_a_commit_gated_consumer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    isolate_prometheus(monkeypatch)
    app = create_app("factory", DriftlineSettings(data_dir=tmp_path), IngestionSettings())

    assert isinstance(app.producer, DurableProducer)
    assert isinstance(app.consumer, CommitGatedConsumer)
    assert app.conf.processing_guarantee.value == "at_least_once"
    producer = app.producer._new_producer()
    try:
        assert producer._txn_manager is not None  # aiokafka's idempotence bookkeeping
        assert producer._sender._acks == -1
    finally:
        await producer.stop()


def test_the_durable_producer_settings_are_idempotent_with_acks_all() -> None:
    assert DURABLE_PRODUCER_SETTINGS == {"acks": "all", "enable_idempotence": True}


async def test_settle_waits_for_pending_sends_and_raises_for_one_that_failed() -> None:
    deliveries = Deliveries()
    loop = asyncio.get_running_loop()
    delivered, lost = loop.create_future(), loop.create_future()
    deliveries.track(delivered, "out", b"k1", b"value")
    deliveries.track(lost, "out", b"k2", b"x" * 10)
    assert deliveries.pending == 2

    loop.call_later(0.01, delivered.set_result, None)
    loop.call_later(0.02, lost.set_exception, MessageSizeTooLargeError())
    with pytest.raises(DeliveryFailedError, match="1 record\\(s\\) to out were not delivered"):
        await deliveries.settle()

    assert deliveries.pending == 0
    assert [(f.topic, f.key, f.value_bytes) for f in deliveries.failed] == [("out", b"k2", 10)]
    with pytest.raises(DeliveryFailedError):  # a lost output blocks every later commit
        await deliveries.settle()


async def test_settle_passes_when_every_send_was_delivered() -> None:
    deliveries = Deliveries()
    sent = asyncio.get_running_loop().create_future()
    deliveries.track(sent, "out", None, None)
    sent.set_result(None)
    await deliveries.settle()
    assert deliveries.pending == 0
    assert not deliveries.failed


async def test_settle_sees_a_failure_whose_callback_has_not_run_yet() -> None:
    deliveries = Deliveries()
    lost = asyncio.get_running_loop().create_future()
    deliveries.track(lost, "out", b"k", b"v")
    lost.set_exception(MessageSizeTooLargeError())  # its done callback is only scheduled

    with pytest.raises(DeliveryFailedError):
        await deliveries.settle()
    await asyncio.sleep(0)  # the callback runs now and finds it settled
    assert len(deliveries.failed) == 1
