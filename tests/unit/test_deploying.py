"""The change a reviewer sees before a deployment or stream declaration is published."""

from __future__ import annotations

from shared.deploying import deployment_from_options, describe_change


def test_a_change_reads_as_a_diff_of_the_records_and_a_republished_record_as_none() -> None:
    live = deployment_from_options("fraud", "payments", "models:/fraud@champion")
    again = deployment_from_options("fraud", "payments", "models:/fraud@champion")
    canary = deployment_from_options(
        "fraud", "payments", "models:/fraud@champion", "models:/fraud@challenger", 0.2
    )

    assert live.updated_at != again.updated_at or live == again
    assert describe_change(live, again) == []
    diff = describe_change(live, canary)
    assert diff[:2] == ["--- live", "+++ new"]
    added = [line for line in diff if line.startswith("+") and not line.startswith("+++")]
    assert '+      "model_uri": "models:/fraud@challenger",' in added
    assert '+      "weight": 0.2' in added
    assert not any(line.startswith("-") and not line.startswith("---") for line in diff)
    created, deleted = describe_change(None, live), describe_change(live, None)
    assert [line[1:] for line in created[3:]] == [line[1:] for line in deleted[3:]]
    assert {line[0] for line in created[3:]} == {"+"}
    assert {line[0] for line in deleted[3:]} == {"-"}
