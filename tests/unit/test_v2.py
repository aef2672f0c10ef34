"""The V2 backend's pure parts: its URIs, the circuit breaker, requests built from metadata,
answers read back, the deploy-time input check, and promotion of a challenger on another
backend (no server: the real MLServer is in tests/integration/test_v2_backend.py)."""

from __future__ import annotations

from typing import Any

import pytest

from shared.backends import backend_for
from shared.breaker import CircuitBreaker
from shared.errors import EndpointRefusedError, UnknownModelError, WrongFeaturesError
from shared.events import Deployment, StreamSchema, Variant
from shared.model_uris import V2Uri, check_model_uri, model_identity
from shared.rollout import (
    NoChallengerError,
    challenger_variants,
    find_swap_challenger,
    swap_challengers,
    swapped,
)
from shared.v2 import (
    ModelMetadata,
    V2Backend,
    encode_row,
    inference_request,
    input_problems,
    read_answers,
)

URI = "v2+http://models.local:8080/fraud"
METADATA = ModelMetadata.parse(
    URI,
    {
        "name": "fraud",
        "versions": [],
        "platform": "",
        "inputs": [
            {"name": "amount", "datatype": "FP64", "shape": [-1, 1]},
            {"name": "country", "datatype": "BYTES", "shape": [-1]},
        ],
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [-1, 1]},
            {
                "name": "predict_proba",
                "datatype": "FP64",
                "shape": [-1, 2],
                "parameters": {"classes": [0, 1]},
            },
        ],
    },
)


def test_v2_uris_name_server_model_and_version() -> None:
    assert V2Uri.parse("v2+http://127.0.0.1:18081/fraud") == V2Uri(
        "http://127.0.0.1:18081", "fraud", None
    )
    parsed = V2Uri.parse("v2+https://models.example.com/fraud-v2/versions/3")
    assert parsed == V2Uri("https://models.example.com", "fraud-v2", "3")
    assert parsed.model_path == "/v2/models/fraud-v2/versions/3"
    for bad in ("v2+http://host:0/m", "v2+http://host:8080/", "v2+ftp://host/m", "v2+http://h/a/b"):
        assert V2Uri.parse(bad) is None
        with pytest.raises(UnknownModelError, match="v2\\+http\\(s\\)://"):
            check_model_uri(bad)


def test_backend_for_picks_the_v2_backend_by_scheme() -> None:
    backend = backend_for(URI, "http://mlflow", snapshots=None)  # type: ignore[arg-type]
    assert isinstance(backend, V2Backend)
    assert backend.endpoint.base_url == "http://models.local:8080"


def test_a_breaker_opens_after_failures_in_a_row_and_one_probe_closes_it() -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=3, reset_s=2.0, clock=lambda: now[0])
    breaker.failed()
    breaker.failed()
    breaker.succeeded()  # an answer resets the count
    breaker.failed()
    breaker.failed()
    assert breaker.allow() and breaker.state == "closed"
    breaker.failed()
    assert (breaker.state, breaker.allow(), breaker.retry_in()) == ("open", False, 2.0)
    now[0] = 1.5
    assert not breaker.allow()
    now[0] = 2.0
    assert breaker.allow() and breaker.state == "half_open"
    assert not breaker.allow(), "one probe at a time"
    breaker.failed()  # the probe failed: open again at once, for a whole reset period
    assert (breaker.state, breaker.retry_in()) == ("open", 2.0)
    now[0] = 4.0
    assert breaker.allow()
    breaker.succeeded()
    assert (breaker.state, breaker.allow()) == ("closed", True)


def test_a_request_has_one_tensor_per_declared_input_in_declared_order() -> None:
    rows = [
        encode_row(URI, METADATA, {"country": "FR", "amount": 3, "unused": 1.0}),
        encode_row(URI, METADATA, {"amount": 0.5, "country": "DE"}),
    ]
    assert inference_request(METADATA, rows) == {
        "inputs": [
            {"name": "amount", "datatype": "FP64", "shape": [2, 1], "data": [3.0, 0.5]},
            {
                "name": "country",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["FR", "DE"],
                "parameters": {"content_type": "str"},
            },
        ],
        "parameters": {"content_type": "pd"},
        "outputs": [{"name": "predict"}, {"name": "predict_proba"}],
    }


def test_an_event_without_an_input_or_with_a_value_of_another_type_is_refused() -> None:
    with pytest.raises(WrongFeaturesError, match="event lacks country"):
        encode_row(URI, METADATA, {"amount": 1.0})
    with pytest.raises(WrongFeaturesError, match="amount='high' is not FP64"):
        encode_row(URI, METADATA, {"amount": "high", "country": "FR"})


def test_answers_carry_the_label_and_the_probabilities_of_the_declared_classes() -> None:
    body = {
        "model_name": "fraud",
        "model_version": "v1",
        "outputs": [
            {"name": "predict", "datatype": "INT64", "shape": [2, 1], "data": [0, 1]},
            {
                "name": "predict_proba",
                "datatype": "FP64",
                "shape": [2, 2],
                "data": [0.9, 0.1, 0.2, 0.8],
            },
        ],
    }
    assert read_answers(URI, METADATA, body, 2) == [
        (0, {"0": 0.9, "1": 0.1}),
        (1, {"0": 0.2, "1": 0.8}),
    ]


def test_without_classes_no_probabilities_and_without_outputs_the_first_answered() -> None:
    bare = ModelMetadata.parse(URI, {"name": "m", "inputs": METADATA_INPUTS, "outputs": []})
    body = {"outputs": [{"name": "out", "datatype": "FP32", "shape": [2], "data": [1.5, 2.5]}]}
    assert read_answers(URI, bare, body, 2) == [(1.5, None), (2.5, None)]


METADATA_INPUTS: list[dict[str, Any]] = [{"name": "amount", "datatype": "FP64", "shape": [-1]}]


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"outputs": []}, "StopIteration|KeyError"),
        ({"error": "boom"}, "KeyError"),
        (
            {
                "outputs": [
                    {"name": "predict", "datatype": "INT64", "shape": [3], "data": [0, 1, 1]}
                ]
            },
            "3 values for 2 rows",
        ),
    ],
)
def test_an_answer_for_other_rows_is_refused(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(EndpointRefusedError, match=problem):
        read_answers(URI, METADATA, body, 2)


def test_the_deploy_check_names_inputs_the_stream_lacks_or_cannot_fill() -> None:
    stream = StreamSchema.model_validate(
        {
            "name": "payments",
            "features": [{"name": "amount"}, {"name": "country", "type": "categorical"}],
            "aggregates": [{"field": "amount", "minutes": 10}],
        }
    )
    assert input_problems(METADATA, stream) == []
    other = ModelMetadata.parse(
        URI,
        {
            "name": "m",
            "inputs": [
                {"name": "amount_mean_10m", "datatype": "FP32", "shape": [-1]},
                {"name": "country", "datatype": "FP64", "shape": [-1]},
                {"name": "age", "datatype": "INT64", "shape": [-1]},
            ],
        },
    )
    assert input_problems(other, stream) == [
        "it takes age, which stream 'payments' does not declare "
        "(it has amount, country, amount_count_10m, amount_mean_10m)",
        "input country is FP64, feature country is categorical",
    ]


def _deployment(champion: str, challenger: str, role: str = "canary") -> Deployment:
    return Deployment(
        name="fraud",
        stream="payments",
        variants=[
            Variant(name="champion", role="champion", model_uri=champion),
            Variant(name="challenger", role=role, model_uri=challenger, weight=0.5),
        ],
    )


def test_a_v2_challenger_of_an_mlflow_champion_is_swapped_in_by_uri() -> None:
    deployment = _deployment("models:/fraud@champion", URI)
    assert challenger_variants(deployment) == []
    assert [v.name for v in swap_challengers(deployment)] == ["challenger"]
    promoted = swapped(deployment, "challenger", promoted=True)
    assert [(v.name, v.role, v.model_uri) for v in promoted.variants] == [
        ("champion", "champion", URI)
    ]
    rolled_back = swapped(deployment, "challenger", promoted=False)
    assert [v.model_uri for v in rolled_back.variants] == ["models:/fraud@champion"]
    assert swapped(promoted, "challenger", promoted=True) is promoted, "done once"


def test_which_variants_are_swapped_in() -> None:
    assert [v.name for v in swap_challengers(_deployment(URI, "models:/fraud/2", "shadow"))] == [
        "challenger"
    ]
    assert swap_challengers(_deployment(URI, URI + "-2")) != []
    assert swap_challengers(_deployment("models:/a@champion", "models:/a/2")) == []
    assert swap_challengers(_deployment("models:/a@champion", "online:a")) == []
    assert swap_challengers(_deployment(URI, "online:a")) == []


def test_an_operator_finds_the_one_challenger_on_another_backend() -> None:
    deployment = _deployment("models:/fraud@champion", URI + "/versions/3")
    found = find_swap_challenger(deployment)
    assert found is not None and found.name == "challenger"
    assert model_identity(found.model_uri) == ("fraud", "3")
    assert model_identity(URI) == ("fraud", "latest")
    assert model_identity("models:/fraud@champion") == ("fraud", "@champion")
    assert find_swap_challenger(_deployment("models:/a@champion", "models:/a/2")) is None
    both = deployment.model_copy(
        update={
            "variants": [
                *deployment.variants,
                Variant(name="shadow", role="shadow", model_uri="models:/fraud/2"),
            ]
        }
    )
    with pytest.raises(
        NoChallengerError, match=r"several challengers \(variants challenger, shadow\)"
    ):
        find_swap_challenger(both)
