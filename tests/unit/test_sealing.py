"""Sealed table values and identity-bound MACs: nothing is decoded unless its MAC verifies for
what it claims to be."""

from __future__ import annotations

import pickle
from pathlib import Path

import faust
import pytest
from prometheus_client import REGISTRY
from pydantic import SecretStr

from services.drift.trials import Trial
from shared.errors import SealError
from shared.events import ModelSnapshot
from shared.sealing import (
    PICKLE,
    SealedState,
    json_codec,
    seal,
    sealed_table,
    unseal,
    version_of,
)
from shared.signing import KeyRing, mac, sign_snapshot, verify_snapshot
from tests.support.faust_doubles import apply_changelog
from tests.support.hostile import marker_pickle

KEYS = KeyRing(SecretStr("state-key"))
IDENTITY = ("state", "learner", "model_state", b"fraud-lr")


def test_a_sealed_value_unseals_only_as_itself_under_its_key() -> None:
    sealed = seal(b"value", IDENTITY, KEYS, 41)

    assert unseal(sealed, IDENTITY, KEYS) == (41, b"value")
    assert version_of(sealed) == 41
    with pytest.raises(SealError, match="bad MAC"):  # the version is sealed too
        unseal(sealed[:1] + (10**6).to_bytes(8, "big") + sealed[9:], IDENTITY, KEYS)
    with pytest.raises(SealError, match="bad MAC"):
        unseal(sealed, ("state", "learner", "model_state", b"other-model"), KEYS)
    with pytest.raises(SealError, match="bad MAC"):
        unseal(sealed, ("state", "drift", "model_state", b"fraud-lr"), KEYS)
    with pytest.raises(SealError, match="bad MAC"):
        unseal(sealed, IDENTITY, KeyRing(SecretStr("another-key")))
    with pytest.raises(SealError, match="bad MAC"):
        unseal(sealed[:-1] + b"!", IDENTITY, KEYS)
    with pytest.raises(SealError, match="not sealed"):
        unseal(b"value", IDENTITY, KEYS)
    with pytest.raises(SealError, match="not sealed"):
        unseal(b"", IDENTITY, KEYS)


def test_the_mac_message_cannot_be_shifted_between_identity_and_value() -> None:
    key = SecretStr("k")
    assert mac(b"c", ("a", "b"), key) != mac(b"bc", ("a",), key)
    assert mac(b"", ("ab",), key) != mac(b"", ("a", "b"), key)
    assert mac(b"x", ("a",), key) != mac(b"x", (b"a", ""), key)


def test_refused_state_is_absent_and_never_unpickled(tmp_path: Path) -> None:
    state = SealedState[dict[str, int]]("learner", "model_state", KEYS, PICKLE)
    marker = tmp_path / "pwned"
    hostile = marker_pickle(marker)
    before = REGISTRY.get_sample_value(
        "driftline_refused_state_total", {"service": "learner", "table": "model_state"}
    )

    assert state.loads(b"m", state.dumps(b"m", {"n": 1}, 0)) == {"n": 1}
    assert state.loads(b"m", None) is None
    assert state.loads(b"m", hostile) is None
    assert (
        state.loads(b"m", seal(hostile, ("state", "learner", "model_state", b"x"), KEYS, 0)) is None
    )
    assert state.loads(b"m", state.dumps(b"other", {"n": 2}, 0)) is None
    assert not marker.exists()
    after = REGISTRY.get_sample_value(
        "driftline_refused_state_total", {"service": "learner", "table": "model_state"}
    )
    assert after == (before or 0) + 3
    pickle.loads(hostile)  # what loading it would have done
    assert marker.exists()


def test_a_trial_is_kept_as_sealed_json() -> None:
    state = SealedState("drift", "promotion_trials", KEYS, json_codec(Trial))
    trial = Trial("fraud", "fraud-model", "canary", "4")
    trial.challenger.add(True, "premium")
    trial.already_seen("labeled[0]", 17)
    stored = state.dumps(b"k", trial, 17)

    assert b'"deployment":"fraud"' in stored
    assert state.loads(b"k", stored) == trial
    assert state.loads(b"k", stored.replace(b'"decided":null', b'"decided":"promote"')) is None


@pytest.mark.parametrize(
    "change",
    [
        {"model_id": "other"},
        {"model_type": "other"},
        {"sequence": 10**30},
        {"schema_version": 2},
        {"payload": b"other payload"},
    ],
)
def test_a_snapshot_signature_covers_its_identity_and_payload(change: dict[str, object]) -> None:
    snapshot = sign_snapshot(
        ModelSnapshot(model_id="m", model_type="t", sequence=3, n_learned=3, payload=b"p"), KEYS
    )

    assert verify_snapshot(snapshot, KEYS)
    assert not verify_snapshot(snapshot.model_copy(update=change), KEYS)
    assert not verify_snapshot(snapshot.model_copy(update={"signature": "zz\ud800"}), KEYS)


def test_a_table_rebuilt_from_its_changelog_keeps_the_newest_verified_value(
    tmp_path: Path,
) -> None:
    """A zombie (a worker paused past its session timeout) may deliver a write made before
    its successor's newer ones; a forged record may follow them. Neither replaces the value of
    the highest version, and a deletion still applies."""
    app = faust.App("sealing-test", store="memory://", datadir=str(tmp_path))
    state = SealedState[dict[str, int]]("learner", "model_state", KEYS, PICKLE)
    table = sealed_table(app, state)
    records = [
        (b"m", state.dumps(b"m", {"n": 5}, 50)),
        (b"m", state.dumps(b"m", {"n": 9}, 90)),  # the successor's newer write
        (b"m", state.dumps(b"m", {"n": 3}, 30)),  # the zombie's stale write, delivered later
        (b"m", seal(pickle.dumps({"n": 99}), state.identity(b"m"), KeyRing(SecretStr("x")), 99)),
        (b"gone", state.dumps(b"gone", {"n": 1}, 10)),
        (b"gone", None),
    ]

    apply_changelog(app, "model_state", records[:3])
    apply_changelog(app, "model_state", records[3:])

    assert state.loads(b"m", table.data[b"m"]) == {"n": 9}
    assert b"gone" not in table.data
