"""The Prometheus alert rules (deploy/prometheus/rules/): valid for promtool, and each rule fires
on what it is about and only on that (the cases in driftline-alerts.test.yml). Run by
`make rules`, which builds promtool; `make test` checks the metrics the rules query
(tests/unit/test_queried_metrics.py) but not promtool's verdict."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import ROOT, run, tool

pytestmark = pytest.mark.promtool

RULES = ROOT / "deploy" / "prometheus" / "rules" / "driftline-alerts.yml"
CASES = ROOT / "tests" / "deploy" / "driftline-alerts.test.yml"


def test_rules_pass_promtool_check() -> None:
    out = run([tool("promtool"), "check", "rules", RULES])
    assert "SUCCESS: 6 rules found" in out


def test_rules_fire_as_their_unit_tests_expect() -> None:
    out = run([tool("promtool"), "test", "rules", CASES])
    assert "SUCCESS" in out
