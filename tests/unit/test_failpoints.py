"""`shared.failpoints`: the spec fault tests arm, refused with its reason when malformed, and a
worker process that exits on the pass it is armed for."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from shared import failpoints


def test_a_spec_names_each_point_and_the_pass_it_fires_on() -> None:
    assert failpoints.parse("") == {}
    assert failpoints.parse("outputs-delivered=3") == {"outputs-delivered": 3}


@pytest.mark.parametrize("spec", ["outputs-delivered", "outputs-delivered=0", "nowhere=1", "x=y"])
def test_a_malformed_spec_is_refused_with_what_is_expected(spec: str) -> None:
    with pytest.raises(ValueError, match="name=count"):
        failpoints.parse(spec)


def test_a_process_exits_as_killed_on_the_armed_pass_and_not_before() -> None:
    script = (
        "from shared import failpoints\n"
        "for n in range(1, 5):\n"
        "    print(n, flush=True)\n"
        "    failpoints.reached('outputs-delivered')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, failpoints.ENV: "outputs-delivered=2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == failpoints.EXIT_STATUS
    assert done.stdout.split()[:2] == ["1", "2"] and "3" not in done.stdout.split()
    assert "failpoint reached" in done.stdout + done.stderr
