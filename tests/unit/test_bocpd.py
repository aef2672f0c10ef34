"""BOCPD: finds clear changes within a few values and where they began, stays quiet on a long
stationary stream, and keeps a small state that pickles and resumes exactly."""

from __future__ import annotations

import doctest
import pickle
import random

import pytest

from services.drift import bocpd
from services.drift.bocpd import BOCPD
from services.drift.detectors import Detector

CHANGE = 1000
"""1-based position of the first value after the change in the test streams."""


def _stream(seed: int, after: tuple[float, float], n: int = 2000) -> list[float]:
    """N(0, 1) up to CHANGE - 1, then N(mean, sd) = `after`."""
    rng = random.Random(seed)
    return [rng.gauss(*((0.0, 1.0) if i < CHANGE else after)) for i in range(1, n + 1)]


def _drifts(detector: BOCPD | Detector, values: list[float]) -> list[tuple[int, int]]:
    """(position of each drift, start of the run the detector places after it)."""
    found = []
    for i, value in enumerate(values, start=1):
        detector.update(value)
        if detector.drift_detected:
            run = detector.run_length if isinstance(detector, BOCPD) else detector.window_width
            assert run is not None
            found.append((i, i - run + 1))
    return found


def test_the_module_examples_hold() -> None:
    assert doctest.testmod(bocpd).failed == 0


@pytest.mark.parametrize("seed", range(5))
def test_a_clear_mean_shift_is_found_within_a_few_values_and_placed_where_it_began(
    seed: int,
) -> None:
    drifts = _drifts(BOCPD(), _stream(seed, (3.0, 1.0)))

    assert len(drifts) == 1
    position, start = drifts[0]
    assert CHANGE <= position <= CHANGE + 10
    assert abs(start - CHANGE) <= 3


def test_a_variance_change_is_found() -> None:
    drifts = _drifts(BOCPD(), _stream(4, (0.0, 4.0)))

    assert [p for p, _ in drifts if p >= CHANGE][:1] != []
    assert all(p >= CHANGE for p, _ in drifts)
    assert drifts[0][0] <= CHANGE + 30


def test_no_alarm_on_a_long_stationary_stream() -> None:
    rng = random.Random(2026)
    detector = BOCPD()

    assert _drifts(detector, [rng.gauss(50.0, 7.0) for _ in range(20_000)]) == []
    assert detector.change_probability < detector.threshold


def test_it_warns_on_rising_change_probability_before_it_fires() -> None:
    detector = BOCPD()
    warned = None
    for i, value in enumerate(_stream(1, (1.0, 1.0)), start=1):
        detector.update(value)
        if detector.warning_detected and warned is None and i >= CHANGE:
            warned = i
        if detector.drift_detected:
            break
    assert warned is not None and CHANGE <= warned < i
    assert detector.change_probability > detector.threshold


def test_the_state_stays_small_and_a_pickled_copy_resumes_exactly() -> None:
    values = _stream(3, (2.0, 1.0), n=3000)
    detector = BOCPD()
    _drifts(detector, values[:1500])

    state = pickle.dumps(detector)
    copy = pickle.loads(state)

    assert len(state) < 10_000
    assert len(detector._start) <= detector.window
    assert _drifts(copy, values[1500:]) == _drifts(detector, values[1500:])
    assert copy.change_probability == detector.change_probability


def test_its_scale_comes_from_the_data_so_units_do_not_matter() -> None:
    values = _stream(0, (3.0, 1.0))

    in_units = _drifts(BOCPD(), values)
    in_thousands = _drifts(BOCPD(), [1000.0 * v + 5e6 for v in values])

    assert in_units == in_thousands


def test_the_service_detector_names_it_and_its_window_starts_at_the_change() -> None:
    detector = Detector("bocpd", {"hazard": 0.001})
    drifts = _drifts(detector, _stream(0, (3.0, 1.0)))

    assert detector.name == "BOCPD"
    assert drifts == _drifts(BOCPD(hazard=0.001), _stream(0, (3.0, 1.0)))
    assert set(detector.stats()) == {"change_probability"}


@pytest.mark.parametrize(
    "params",
    [
        {"hazard": 0},
        {"prune": 0},
        {"threshold": 0.1, "warning_threshold": 0.5},
        {"window": 1},
        {"beta0": 0},
    ],
)
def test_wrong_parameters_are_refused(params: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BOCPD(**params)
