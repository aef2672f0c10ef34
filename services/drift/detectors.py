"""Drift detectors behind one verb, with each River detector's input convention fixed in one place.

River's value detectors (ADWIN, KSWIN, Page-Hinkley) take any number; its binary ones take 0/1
with 1 meaning an error, except FHDDM, whose code fires when the mean of its input *falls*
(river 0.26.1, although its docstring says 1 = error): :class:`Detector` always takes the error
and gives FHDDM the correctness ``1 - error``. Categorical values go to :class:`PSI`, a windowed
distribution test that speaks River's verbs.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Literal

from river import base
from river.drift import ADWIN, KSWIN, PageHinkley
from river.drift.binary import DDM, EDDM, FHDDM, HDDMA, HDDMW

from services.drift.bocpd import BOCPD
from shared.errors import DriftlineError
from shared.psi import psi

Input = Literal["value", "error", "category"]


class PSI(base.DriftAndWarningDetector):
    """Population stability index between a reference window and the current one.

    The first `window` values make the reference distribution; every following block of `window`
    values is compared with it. A PSI above `drift_threshold` is a drift and that block becomes
    the new reference; above `warning_threshold` a warning. The usual reading of PSI: below 0.1
    stable, 0.1 to 0.25 a moderate shift, above 0.25 a significant one.

    Parameters
    ----------
    window
        Values per reference and per current window.
    warning_threshold
        PSI above which the current window is a warning.
    drift_threshold
        PSI above which the current window is a drift.
    epsilon
        Share given to a category missing from one window, so its log stays finite.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(7)
    >>> psi = PSI(window=200)
    >>> stream = [rng.choice("aab") for _ in range(600)] + [rng.choice("abb") for _ in range(600)]
    >>> for i, value in enumerate(stream, start=1):
    ...     psi.update(value)
    ...     if psi.drift_detected:
    ...         print(f"drift at {i}, psi {psi.psi:.2f}")
    drift at 800, psi 0.45

    """

    def __init__(
        self,
        window: int = 500,
        warning_threshold: float = 0.1,
        drift_threshold: float = 0.25,
        epsilon: float = 1e-4,
    ) -> None:
        if window < 2:
            raise ValueError("'window' must be at least 2")
        if not 0 < warning_threshold <= drift_threshold:
            raise ValueError("need 0 < 'warning_threshold' <= 'drift_threshold'")
        self.window = window
        self.warning_threshold = warning_threshold
        self.drift_threshold = drift_threshold
        self.epsilon = epsilon
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._reference: Counter[str] = Counter()
        self._current: Counter[str] = Counter()
        self.psi = 0.0

    def update(self, x: str) -> None:
        """Count one category; at the end of each current window, compare it with the reference."""
        if self.drift_detected:
            self._drift_detected = False
            self._reference, self._current = self._current, Counter()
        self._warning_detected = False
        if self._reference.total() < self.window:
            self._reference[x] += 1
            return
        self._current[x] += 1
        if self._current.total() < self.window:
            return
        self.psi = self.index(self._reference, self._current)
        if self.psi > self.drift_threshold:
            self._drift_detected = True
        else:
            self._warning_detected = self.psi > self.warning_threshold
            self._current = Counter()

    def index(self, reference: Counter[str], current: Counter[str]) -> float:
        """PSI of `current` against `reference`: sum of (q - p) * ln(q / p) over categories."""
        n_ref, n_cur = reference.total(), current.total()
        categories = reference.keys() | current.keys()
        return psi(
            [reference[c] / n_ref for c in categories],
            [current[c] / n_cur for c in categories],
            self.epsilon,
        )


_KINDS: dict[str, tuple[type[base.DriftDetector], Input]] = {
    "adwin": (ADWIN, "value"),
    "kswin": (KSWIN, "value"),
    "page_hinkley": (PageHinkley, "value"),
    "bocpd": (BOCPD, "value"),
    "ddm": (DDM, "error"),
    "eddm": (EDDM, "error"),
    "hddm_a": (HDDMA, "error"),
    "hddm_w": (HDDMW, "error"),
    "fhddm": (FHDDM, "error"),
    "psi": (PSI, "category"),
}
"""Detector kinds by the name settings use, with the input each takes."""
KINDS = tuple(_KINDS)


class DetectorConfigError(DriftlineError):
    """A detector setting names an unknown kind, a wrong parameter or the wrong input."""

    code = "bad_detector_setting"

    def __init__(self, where: str, spec: dict[str, Any], problem: str) -> None:
        self.where = where
        self.spec = spec
        self.problem = problem
        super().__init__(f"detector {where}={spec}: {problem}")


class DetectorInputError(DriftlineError):
    """A value of the wrong type for its detector (a category where a number was seen before)."""

    code = "wrong_value_type"

    def __init__(self, kind: str, value: object) -> None:
        self.kind = kind
        self.value = value
        wanted = "categories" if kind == "psi" else "numbers"
        super().__init__(f"detector {kind} takes {wanted}, got {value!r}")


class Detector:
    """One River detector (or :class:`PSI`) built from a setting like ``{"kind": "ddm"}``.

    Parameters
    ----------
    kind
        One of :data:`KINDS`.
    params
        The detector's own ``__init__`` arguments (River's names).

    Examples
    --------
    >>> fhddm = Detector("fhddm", {"sliding_window_size": 50})
    >>> errors = [0] * 100 + [1] * 60
    >>> for i, error in enumerate(errors, start=1):
    ...     fhddm.update(error)
    ...     if fhddm.drift_detected:
    ...         print(f"drift at {i}")
    ...         break
    drift at 119

    """

    def __init__(self, kind: str, params: dict[str, Any] | None = None) -> None:
        if kind not in _KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        cls, self.input = _KINDS[kind]
        self.kind = kind
        self.params = dict(params or {})
        self.detector = cls(**self.params)

    @classmethod
    def from_setting(cls, where: str, spec: dict[str, Any], accepts: tuple[Input, ...]) -> Detector:
        """Build from one settings entry; anything wrong raises `DetectorConfigError`."""
        params = {name: value for name, value in spec.items() if name != "kind"}
        try:
            detector = cls(str(spec.get("kind", "")), params)
        except (TypeError, ValueError) as exc:
            raise DetectorConfigError(where, spec, str(exc)) from None
        if detector.input not in accepts:
            raise DetectorConfigError(
                where, spec, f"{detector.kind} takes {detector.input}s, not {' or '.join(accepts)}s"
            )
        return detector

    @property
    def name(self) -> str:
        """The detector's class name, as alerts report it."""
        return type(self.detector).__name__

    def update(self, x: float | str) -> None:
        """Feed one value: a number, a category, or for binary detectors 1 = error, 0 = right."""
        if isinstance(x, str) != (self.input == "category"):
            raise DetectorInputError(self.kind, x)
        self.detector.update(1 - x if self.kind == "fhddm" else x)

    @property
    def drift_detected(self) -> bool:
        """Whether the last value made the detector fire."""
        return self.detector.drift_detected

    @property
    def warning_detected(self) -> bool:
        """Whether the detector is in its warning zone (never for detectors without one)."""
        return bool(getattr(self.detector, "warning_detected", False))

    @property
    def window_width(self) -> int | None:
        """How many latest values the detector holds as the new behaviour right after it fired:
        ADWIN's window after its cut, KSWIN's recent sample, PSI's drifted block, BOCPD's run
        since the most probable change point. None for detectors that keep no such window (DDM
        and kin, Page-Hinkley)."""
        if isinstance(self.detector, BOCPD):
            return self.detector.run_length
        if isinstance(self.detector, ADWIN):
            return int(self.detector.width)
        if isinstance(self.detector, KSWIN):
            return len(self.detector.window)
        if isinstance(self.detector, PSI):
            return self.detector.window
        return None

    def stats(self) -> dict[str, float]:
        """What the detector itself estimates, for the alert (ADWIN's mean, PSI's index,
        BOCPD's change probability)."""
        if isinstance(self.detector, BOCPD):
            return {"change_probability": self.detector.change_probability}
        if isinstance(self.detector, ADWIN):
            return {"estimation": float(self.detector.estimation)}
        if isinstance(self.detector, PSI):
            return {"psi": self.detector.psi}
        return {}
