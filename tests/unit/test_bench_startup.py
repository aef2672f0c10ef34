"""The start-up benchmark measures each command in its own child and reports the median."""

from __future__ import annotations

import pytest

from loadtest.bench_startup import BLOCK_END, BLOCK_START, Cost, measure, render


def test_a_command_is_measured_by_its_own_resource_usage() -> None:
    cost = measure(["-c", "x = bytearray(64 * 1024 * 1024); sum(range(2_000_000))"])

    assert cost.cpu_s > 0 and cost.wall_s >= cost.cpu_s / 2
    assert cost.max_rss_mb > 64, "the child's own peak, which holds its 64 MB"


def test_a_command_that_fails_is_an_error_naming_it_and_its_exit_code() -> None:
    with pytest.raises(
        RuntimeError, match=r"(?s)-c import no_such_module exited 1: .*ModuleNotFound"
    ):
        measure(["-c", "import no_such_module"])


def test_the_block_holds_one_row_per_command_between_its_markers() -> None:
    block = render({"driftline --help": Cost(0.61, 0.8, 46.2)}, runs=5, load=0.5)

    assert block.startswith(BLOCK_START) and block.endswith(BLOCK_END)
    assert "| `driftline --help` | 0.61 | 0.80 | 46 |" in block
    assert "the median of 5 runs" in block
