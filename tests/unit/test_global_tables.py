"""The check every deployment record passes before a service's global table stores it."""

from __future__ import annotations

import pytest

from shared.errors import EventDecodeError
from shared.events import Deployment, Variant, encode
from shared.records import check_deployment

DEPLOYMENT = Deployment(
    name="fraud",
    stream="payments",
    variants=[Variant(name="champion", role="champion", model_uri="models:/fraud@champion")],
)


def test_a_deployment_record_is_keyed_by_its_name_and_removed_by_a_tombstone_or_deletion() -> None:
    assert check_deployment(b"fraud", encode(DEPLOYMENT), "d") == DEPLOYMENT
    assert check_deployment(b"fraud", None, "d") is None
    deleted = DEPLOYMENT.model_copy(update={"deleted": True})
    assert check_deployment(b"fraud", encode(deleted), "d") is None
    with pytest.raises(EventDecodeError, match="no key"):
        check_deployment(None, encode(DEPLOYMENT), "d")
    with pytest.raises(EventDecodeError, match="not the deployment name 'fraud'"):
        check_deployment(b"other", encode(DEPLOYMENT), "d")
    with pytest.raises(EventDecodeError, match="not valid JSON"):
        check_deployment(b"fraud", b"{", "d")
