"""The V2 backend over real HTTP: one ``/infer`` per micro-batch per model, the timeout, the
bound on requests in flight, and which failures it sends again (none that the server may still be
computing). The server is an in-process aiohttp app on 127.0.0.1 that counts, holds and fails
requests on demand; the real MLServer is in tests/integration/test_v2_backend.py."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import pytest
from aiohttp import web
from pydantic import SecretStr

from services.processes import free_port
from shared.backends import Answer, ModelCache, SnapshotStore, backend_for
from shared.deploying import deployment_from_options
from shared.errors import CircuitOpenError, EndpointError, EndpointRefusedError, ModelError
from shared.events import Deployment, FeatureEvent, Prediction
from shared.routing import (
    DeploymentIndex,
    Failure,
    VariantsFailedError,
    answer_calls,
    plan_calls,
)
from shared.signing import KeyRing
from shared.v2 import V2Backend, V2Options

FAST = V2Options(timeout_s=0.2, max_concurrency=2, breaker_failures=3, breaker_reset_s=2.0)
"""Options small enough that a timeout costs the test a fifth of a second."""
PATIENT = V2Options(timeout_s=5.0, max_concurrency=2, breaker_failures=3, breaker_reset_s=2.0)
"""Options for tests that hold requests on purpose: a hold is never mistaken for a timeout."""
WITHIN_S = 5.0
"""Longest a test waits for a condition on the server: generous room on a busy machine."""

Fate = Literal["answer", "hold", "drop", "503", "400"]
"""What the server does with an ``/infer`` request: answer it, hold it until let through, close
the connection unanswered, answer 503 (overloaded) or 400 (a bad request)."""


def model_metadata(name: str) -> dict[str, Any]:
    """MLServer-style metadata: one FP64 input ``amount``, one INT64 output ``predict``."""
    return {
        "name": name,
        "versions": ["v1"],
        "platform": "",
        "inputs": [{"name": "amount", "datatype": "FP64", "shape": [-1, 1]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": [-1, 1]}],
    }


def flags_positive(amount: float) -> int:
    """What every model of the server answers: 1 for a positive amount, else 0."""
    return int(amount > 0)


@dataclass
class V2Server:
    """An Open Inference Protocol server on 127.0.0.1 whose models answer `flags_positive`.

    It records every ``/infer`` body by model, counts the requests in flight (and the most at
    once), and meets each request with the next of `fates` (`default_fate` once they run out).
    """

    port: int = field(default_factory=free_port)
    fates: list[Fate] = field(default_factory=list)
    default_fate: Fate = "answer"
    infer_bodies: dict[str, list[dict[str, Any]]] = field(default_factory=lambda: defaultdict(list))
    in_flight: int = 0
    most_in_flight: int = 0
    _passes: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(0))
    _changed: asyncio.Condition = field(default_factory=asyncio.Condition)
    _runner: web.AppRunner | None = None

    def uri(self, model: str = "fraud") -> str:
        """The V2 model URI a deployment gives `model` on this server."""
        return f"v2+http://127.0.0.1:{self.port}/{model}"

    def inferences(self, model: str = "fraud") -> int:
        """``/infer`` requests that reached `model` so far."""
        return len(self.infer_bodies[model])

    def let_one_through(self) -> None:
        """Answer one held request."""
        self._passes.release()

    async def wait_until(self, condition: Callable[[], bool]) -> None:
        """Return once `condition` holds on the server; fail after `WITHIN_S`."""
        async with asyncio.timeout(WITHIN_S), self._changed:
            await self._changed.wait_for(condition)

    async def __aenter__(self) -> V2Server:
        app = web.Application()
        app.router.add_get("/v2/models/{model}", self._metadata)
        app.router.add_post("/v2/models/{model}/infer", self._infer)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *_: object) -> None:
        for _ in range(self.in_flight):  # requests the client gave up on still wait here
            self.let_one_through()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _metadata(self, request: web.Request) -> web.Response:
        return web.json_response(model_metadata(request.match_info["model"]))

    async def _infer(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        body = await request.json()
        fate = self.fates.pop(0) if self.fates else self.default_fate
        self.infer_bodies[model].append(body)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        await self._notify()
        try:
            if fate == "drop":
                assert request.transport is not None
                request.transport.close()
                return web.Response()
            if fate in ("503", "400"):
                return web.json_response({"error": f"scripted {fate}"}, status=int(fate))
            if fate == "hold":
                await self._passes.acquire()
            amounts = body["inputs"][0]["data"]
            answer = {
                "model_name": model,
                "model_version": "v1",
                "outputs": [
                    {
                        "name": "predict",
                        "datatype": "INT64",
                        "shape": [len(amounts), 1],
                        "data": [flags_positive(a) for a in amounts],
                    }
                ],
            }
            return web.json_response(answer)
        finally:
            self.in_flight -= 1
            await self._notify()

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()


@pytest.fixture
async def server() -> AsyncIterator[V2Server]:
    async with V2Server() as running:
        yield running


@asynccontextmanager
async def loaded_backend(uri: str, options: V2Options) -> AsyncIterator[V2Backend]:
    """The backend the router's factory makes for `uri`, loaded, and closed afterwards."""
    backend = backend_for(uri, "http://mlflow.unused", snapshot_store(), options)
    assert isinstance(backend, V2Backend)
    await backend.load()
    try:
        yield backend
    finally:
        await backend.unload()


def snapshot_store() -> SnapshotStore:
    return SnapshotStore(KeyRing(SecretStr("unit-key")), cache_size=1)


def rows(*amounts: float) -> list[tuple[dict[str, Any], str]]:
    return [({"amount": amount}, f"u{i}") for i, amount in enumerate(amounts)]


def feature_event(i: int, amount: float) -> FeatureEvent:
    return FeatureEvent(
        event_id=f"e{i}",
        stream="payments",
        entity_id=f"u{i}",
        event_time=datetime(2026, 1, 1, tzinfo=UTC),
        features={"amount": amount},
    )


async def route_batch(
    models: ModelCache, deployment: Deployment, amounts: Sequence[float]
) -> tuple[list[Prediction], dict[int, list[Failure]]]:
    """What the router does with one micro-batch, short of Kafka: plan the calls, get each
    model from the cache, ask them all."""
    index = DeploymentIndex.empty()
    index.apply(deployment.name, deployment)
    events = [(i, feature_event(i, amount)) for i, amount in enumerate(amounts)]
    calls, unrouted = plan_calls(events, index)
    assert not unrouted
    backends = {uri: await models.get(uri) for uri in {c.variant.model_uri for c in calls}}
    return await answer_calls(calls, backends)


def router_models(options: V2Options) -> ModelCache:
    """The router's model cache, built as services/router/app.py builds it."""
    return ModelCache(
        lambda uri: backend_for(uri, "http://mlflow.unused", snapshot_store(), options),
        retry_seconds=60.0,
    )


async def test_a_micro_batch_asks_each_v2_model_once_with_a_tensor_of_all_its_events(
    server: V2Server,
) -> None:
    deployment = deployment_from_options(
        "fraud", "payments", server.uri("fraud"), shadows=[server.uri("fraud-b")]
    )
    models = router_models(PATIENT)
    amounts = [3.0, -1.0, 2.0, -5.0, 0.5]
    try:
        predictions, failures = await route_batch(models, deployment, amounts)
        assert not failures
        assert (server.inferences("fraud"), server.inferences("fraud-b")) == (1, 1)
        for model in ("fraud", "fraud-b"):
            (tensor,) = server.infer_bodies[model][0]["inputs"]
            assert (tensor["name"], tensor["shape"], tensor["data"]) == ("amount", [5, 1], amounts)
        answered = {(p.entity_id, p.outcome.variant): p.outcome.output for p in predictions}
        for i, amount in enumerate(amounts):
            expected = flags_positive(amount)
            assert answered[(f"u{i}", "champion")] == answered[(f"u{i}", "shadow-1")] == expected

        await route_batch(models, deployment, [1.0, 2.0])
        assert (server.inferences("fraud"), server.inferences("fraud-b")) == (2, 2)
    finally:
        await models.refresh(in_use=set())  # unloads every backend


async def test_an_endpoint_slower_than_the_timeout_dead_letters_the_batch_naming_it_and_why(
    server: V2Server,
) -> None:
    server.default_fate = "hold"
    deployment = deployment_from_options("fraud", "payments", server.uri())
    models = router_models(FAST)
    try:
        started = time.monotonic()
        predictions, failures = await route_batch(models, deployment, [1.0, -2.0, 3.0])
        elapsed = time.monotonic() - started
    finally:
        await models.refresh(in_use=set())

    assert elapsed < WITHIN_S
    assert not predictions
    assert failures.keys() == {0, 1, 2}
    for failed in failures.values():
        [(_, variant, error)] = failed
        assert (variant, type(error)) == ("champion", EndpointError)
        # The dead letter's reason, as the router's `route` gives it.
        reason = str(VariantsFailedError(failed))
        assert server.uri() in reason
        assert "no answer within 0.2s" in reason
    assert server.inferences() == 1


async def test_no_more_inferences_are_in_flight_to_an_endpoint_than_its_concurrency_limit(
    server: V2Server,
) -> None:
    server.default_fate = "hold"
    limit, batches = PATIENT.max_concurrency, 6
    async with loaded_backend(server.uri(), PATIENT) as backend:
        asked = [asyncio.create_task(backend.predict_many(rows(float(i)))) for i in range(batches)]
        for answered in range(batches):
            await server.wait_until(
                lambda done=answered: server.inferences() >= min(done + limit, batches)
            )
            assert server.in_flight <= limit
            server.let_one_through()
        results = await asyncio.wait_for(asyncio.gather(*asked), WITHIN_S)

    assert all(isinstance(answers[0], Answer) for answers in results)
    assert server.inferences() == batches
    assert server.most_in_flight == limit


async def test_an_inference_dropped_before_any_answer_is_sent_once_more_and_answered(
    server: V2Server,
) -> None:
    server.fates = ["drop"]
    async with loaded_backend(server.uri(), FAST) as backend:
        answers = await backend.predict_many(rows(4.0, -4.0))

    assert [a.output for a in answers if isinstance(a, Answer)] == [1, 0]
    assert server.inferences() == 2


async def test_an_inference_dropped_twice_fails_after_the_one_retry_naming_the_endpoint(
    server: V2Server,
) -> None:
    server.fates = ["drop", "drop"]
    async with loaded_backend(server.uri(), FAST) as backend:
        answers = await backend.predict_many(rows(4.0))

    [error] = answers
    assert isinstance(error, EndpointError)
    assert server.uri() in str(error) and "ServerDisconnectedError" in str(error)
    assert server.inferences() == 2


@pytest.mark.parametrize(
    ("fate", "error_type", "problem"),
    [
        ("hold", EndpointError, "no answer within 0.2s"),
        ("503", EndpointError, "POST answered 503: scripted 503"),
        ("400", EndpointRefusedError, "POST answered 400: scripted 400"),
    ],
)
async def test_an_inference_the_server_received_is_not_sent_again_when_it_fails(
    server: V2Server, fate: Fate, error_type: type[ModelError], problem: str
) -> None:
    server.fates = [fate]  # a second request would be answered
    async with loaded_backend(server.uri(), FAST) as backend:
        answers = await backend.predict_many(rows(4.0, 5.0))

    assert all(type(a) is error_type and problem in str(a) for a in answers), answers
    assert server.inferences() == 1


async def test_a_refused_connection_fails_the_batch_without_waiting_naming_the_endpoint() -> None:
    uri = f"v2+http://127.0.0.1:{free_port()}/fraud"  # nothing listens there
    started = time.monotonic()
    async with loaded_backend(uri, PATIENT) as backend:
        answers = await backend.predict_many(rows(1.0, 2.0))
    elapsed = time.monotonic() - started

    assert all(isinstance(a, EndpointError) and uri in str(a) for a in answers), answers
    assert "ClientConnectorError" in str(answers[0])
    assert elapsed < PATIENT.timeout_s


async def test_batches_queued_behind_a_hung_endpoint_fail_at_once_when_its_circuit_opens(
    server: V2Server,
) -> None:
    """The first batches time out and open the circuit; those that waited for a slot meanwhile
    fail at once (circuit open) instead of going out and timing out in turn."""
    server.default_fate = "hold"
    options = V2Options(timeout_s=0.2, max_concurrency=2, breaker_failures=2, breaker_reset_s=60)
    async with loaded_backend(server.uri(), options) as backend:
        results = await asyncio.gather(*(backend.predict_many(rows(1.0)) for _ in range(6)))

    errors = [answers[0] for answers in results]
    assert all(isinstance(e, EndpointError) for e in errors), errors
    assert server.inferences() == options.max_concurrency
    assert sum(isinstance(e, CircuitOpenError) for e in errors) == 4
