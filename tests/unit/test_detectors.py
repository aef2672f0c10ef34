"""Detector conventions pinned against river 0.26.1's code, PSI, and settings errors."""

from __future__ import annotations

import pickle
import random
from collections.abc import Callable
from typing import Any

import pytest
from river.drift import ADWIN, KSWIN, PageHinkley
from river.drift.binary import FHDDM

from services.drift.detectors import (
    KINDS,
    PSI,
    Detector,
    DetectorConfigError,
    DetectorInputError,
)
from shared.errors import DriftlineError

BINARY = ("ddm", "eddm", "hddm_a", "hddm_w", "fhddm")


def _errors(seed: int = 5, n: int = 2000, at: int = 1000) -> list[int]:
    rng = random.Random(seed)
    return [int(rng.random() < (0.05 if i < at else 0.5)) for i in range(n)]


def _first_drift(detector: Detector | FHDDM, values: list) -> int | None:
    for i, value in enumerate(values, start=1):
        detector.update(value)
        if detector.drift_detected:
            return i
    return None


@pytest.mark.parametrize("kind", BINARY)
def test_every_binary_detector_takes_errors_and_fires_after_the_error_rate_rises(
    kind: str,
) -> None:
    fired = _first_drift(Detector(kind), _errors())

    assert fired is not None and fired > 1000


def test_river_fhddm_fires_on_a_falling_mean_so_it_is_fed_correctness() -> None:
    errors = _errors()

    assert _first_drift(FHDDM(), errors) is None
    assert _first_drift(FHDDM(), [1 - e for e in errors]) == _first_drift(Detector("fhddm"), errors)


@pytest.mark.parametrize("kind", ("ddm", "eddm", "hddm_a", "hddm_w"))
def test_detectors_with_a_warning_zone_warn_before_they_drift(kind: str) -> None:
    detector = Detector(kind)
    warned = None
    for i, error in enumerate(_errors(), start=1):
        detector.update(error)
        if detector.warning_detected and warned is None and i > 1000:
            warned = i
        if detector.drift_detected and i > 1000:
            break
    assert warned is not None and warned < i


@pytest.mark.parametrize("kind", ("adwin", "kswin", "page_hinkley"))
def test_value_detectors_fire_after_a_mean_shift(kind: str) -> None:
    rng = random.Random(1)
    values = [rng.gauss(0 if i < 500 else 3, 1) for i in range(1000)]
    params = {"seed": 1, "alpha": 0.0001} if kind == "kswin" else {}

    fired = _first_drift(Detector(kind, params), values)

    assert fired is not None and fired > 500


def test_psi_is_quiet_on_a_stable_distribution_and_fires_on_a_shift() -> None:
    rng = random.Random(3)
    stable = [rng.choice("aab") for _ in range(3000)]
    shifted = [rng.choice("abbc") for _ in range(1000)]
    psi = PSI(window=300)

    assert _first_drift(psi, stable) is None
    fired = _first_drift(psi, shifted)
    assert fired == 300
    assert psi.psi > psi.drift_threshold


def test_psi_warns_on_a_moderate_shift_and_keeps_its_reference() -> None:
    psi = PSI(window=100, warning_threshold=0.02, drift_threshold=0.5)
    for value in ["a"] * 50 + ["b"] * 50 + ["a"] * 60 + ["b"] * 40:
        psi.update(value)

    assert psi.warning_detected and not psi.drift_detected
    assert 0.02 < psi.psi < 0.5


def test_psi_index_is_zero_for_equal_windows() -> None:
    from collections import Counter

    same = Counter({"a": 3, "b": 1})
    assert PSI().index(same, same) == 0.0


@pytest.mark.parametrize("kind", KINDS)
def test_detectors_pickle_with_their_state(kind: str) -> None:
    detector = Detector(kind)
    for i in range(50):
        detector.update(str(i % 3) if kind == "psi" else float(i % 2))
    copy = pickle.loads(pickle.dumps(detector))
    follow = [str(i % 2) if kind == "psi" else float(i % 3 == 0) for i in range(500)]

    assert _first_drift(copy, follow) == _first_drift(detector, follow)


KSWIN_PARAMS = {"seed": 1, "alpha": 0.0001, "stat_size": 30}


@pytest.mark.parametrize(
    ("kind", "params", "plain", "width"),
    [
        ("adwin", {}, ADWIN, lambda plain: int(plain.width)),
        ("kswin", KSWIN_PARAMS, KSWIN, lambda plain: len(plain.window)),
        ("page_hinkley", {}, PageHinkley, lambda plain: None),
    ],
)
def test_window_width_is_what_the_river_detector_keeps_right_after_it_fires(
    kind: str, params: dict, plain: type, width: Callable[[Any], int | None]
) -> None:
    rng = random.Random(1)
    values = [rng.gauss(0 if i < 500 else 3, 1) for i in range(1000)]
    detector, river = Detector(kind, params), plain(**params)

    assert _first_drift(detector, values) == _first_drift(river, values) is not None
    assert detector.window_width == width(river)
    assert kind != "kswin" or detector.window_width == KSWIN_PARAMS["stat_size"]


def test_window_width_is_the_drifted_block_for_psi_and_none_for_binary_detectors() -> None:
    psi = Detector("psi", {"window": 300})
    rng = random.Random(3)
    stable = [rng.choice("aab") for _ in range(300)]

    assert _first_drift(psi, stable + [rng.choice("abbc") for _ in range(300)]) == 600
    assert psi.window_width == 300
    ddm = Detector("ddm")
    assert _first_drift(ddm, _errors()) is not None and ddm.window_width is None


@pytest.mark.parametrize(
    ("spec", "accepts", "problem"),
    [
        ({"kind": "nope"}, ("value",), "unknown kind 'nope'"),
        ({"kind": "adwin", "dleta": 0.1}, ("value",), "unexpected keyword argument 'dleta'"),
        ({"kind": "ddm"}, ("value",), "ddm takes errors, not values"),
        ({"kind": "psi", "window": 1}, ("category",), "'window' must be at least 2"),
    ],
)
def test_bad_settings_say_where_and_what(spec: dict, accepts: tuple, problem: str) -> None:
    with pytest.raises(DetectorConfigError, match=problem) as caught:
        Detector.from_setting("pay:amount", spec, accepts)
    assert str(caught.value).startswith("detector pay:amount=")
    assert isinstance(caught.value, DriftlineError)


def test_a_value_of_the_wrong_type_is_a_driftline_error() -> None:
    with pytest.raises(DetectorInputError, match="adwin takes numbers, got 'NL'"):
        Detector("adwin").update("NL")
    with pytest.raises(DetectorInputError, match=r"psi takes categories, got 1\.0"):
        Detector("psi").update(1.0)
