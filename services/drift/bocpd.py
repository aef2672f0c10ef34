"""Bayesian online change-point detection (Adams & MacKay 2007) as a River-style detector.

BOCPD keeps a posterior over the run length, the number of values since the last change, and
updates it with each value: every run either grows (its Normal-Gamma posterior takes the value)
or a new run starts (with constant hazard). It is the best online method in TCPD's evaluation
(van den Burg & Williams 2020), and unlike ADWIN it says *where* the change began: the start of
the most probable run.

Each run is one row of a few numpy arrays. Runs less probable than `prune` are dropped and at
most `window` are kept, so an update costs O(window) and the pickled state stays a few
kilobytes however long the stream.
"""

from __future__ import annotations

import math

import numpy as np
from river import base


class BOCPD(base.DriftAndWarningDetector):
    """Bayesian online change points with a Normal-Gamma model of the values.

    The first `warmup` values fix the scale: values are standardised by their mean and standard
    deviation, so the prior (mean 0, `kappa0`, `alpha0`, `beta0`) fits any unit. The detector
    fires when the posterior mass of runs that began after the current segment's start (the
    change probability) exceeds `threshold` and the most probable run began at least `min_run`
    values after that start; that run's start becomes the new segment's start. It warns while
    the change probability exceeds `warning_threshold`.

    Parameters
    ----------
    hazard
        Prior probability that a change happens at any given value (1 / expected run length).
    threshold
        Change probability above which the detector fires.
    warning_threshold
        Change probability above which it warns.
    min_run
        Values the new run must hold before the detector fires (robustness to single outliers).
    window
        Most runs kept.
    prune
        Runs less probable than this are dropped.
    warmup
        Values that fix the scale before any change is reported.
    kappa0, alpha0, beta0
        Normal-Gamma prior of a new run, on the standardised scale (its mean is 0).

    Examples
    --------
    >>> import random
    >>> rng = random.Random(3)
    >>> detector = BOCPD()
    >>> for i in range(1, 601):
    ...     detector.update(rng.gauss(0 if i <= 300 else 2, 1))
    ...     if detector.drift_detected:
    ...         print(f"drift at {i}, change began at {i - detector.run_length + 1}")
    drift at 305, change began at 301

    """

    def __init__(
        self,
        hazard: float = 1e-3,
        threshold: float = 0.99,
        warning_threshold: float = 0.5,
        min_run: int = 3,
        window: int = 100,
        prune: float = 1e-6,
        warmup: int = 30,
        kappa0: float = 1.0,
        alpha0: float = 1.0,
        beta0: float = 1.0,
    ) -> None:
        if not (0 < hazard < 1 and 0 < prune < 1):
            raise ValueError("'hazard' and 'prune' must be between 0 and 1")
        if not 0 < warning_threshold <= threshold < 1:
            raise ValueError("need 0 < 'warning_threshold' <= 'threshold' < 1")
        if window < 2 or warmup < 2 or min_run < 1:
            raise ValueError("need 'window' >= 2, 'warmup' >= 2 and 'min_run' >= 1")
        if min(kappa0, alpha0, beta0) <= 0:
            raise ValueError("'kappa0', 'alpha0' and 'beta0' must be positive")
        self.hazard = hazard
        self.threshold = threshold
        self.warning_threshold = warning_threshold
        self.min_run = min_run
        self.window = window
        self.prune = prune
        self.warmup = warmup
        self.kappa0 = kappa0
        self.alpha0 = alpha0
        self.beta0 = beta0
        super().__init__()
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self.n = 0
        self.change_probability = 0.0
        self.run_length = 0
        self._segment_start = 1
        self._pending: list[float] = []
        self._center = 0.0
        self._scale = 1.0
        self._start = np.zeros(0, dtype=np.int64)
        self._log_p = np.zeros(0)
        self._mu = np.zeros(0)
        self._kappa = np.zeros(0)
        self._alpha = np.zeros(0)
        self._beta = np.zeros(0)
        self._lg_ratio = np.zeros(0)  # lgamma(alpha + 1/2) - lgamma(alpha), kept by recursion

    def update(self, x: float) -> None:
        """Take one value; `drift_detected` says whether a change was found with it."""
        self._drift_detected = self._warning_detected = False
        self.n += 1
        if self.n <= self.warmup:
            self._pending.append(float(x))
            if self.n == self.warmup:
                self._start_scale()
            return
        self._step((float(x) - self._center) / self._scale)
        self._judge()

    def _start_scale(self) -> None:
        values = np.asarray(self._pending)
        self._center = float(values.mean())
        self._scale = float(values.std()) or 1.0
        self._pending = []
        for position, value in enumerate(values, start=1):
            self._step((value - self._center) / self._scale, position)
        self.run_length = self.n

    def _step(self, z: float, position: int | None = None) -> None:
        """One Adams-MacKay update: each run grows by `z`, or a new run starts with it."""
        rows = (
            np.append(self._mu, 0.0),
            np.append(self._kappa, self.kappa0),
            np.append(self._alpha, self.alpha0),
            np.append(self._beta, self.beta0),
            np.append(self._lg_ratio, math.lgamma(self.alpha0 + 0.5) - math.lgamma(self.alpha0)),
        )
        # The kept runs' probabilities sum to 1, so a new run gets the hazard itself (or all
        # of the mass, for the very first value).
        prior = np.append(self._log_p + math.log1p(-self.hazard), math.log(self.hazard))
        log_p = prior + _log_predictive(z, *rows)
        log_p -= np.logaddexp.reduce(log_p)
        start = np.append(self._start, self.n if position is None else position)
        keep = np.flatnonzero(log_p >= math.log(self.prune))
        if keep.size > self.window:
            keep = np.sort(keep[np.argsort(log_p[keep])[-self.window :]])
        self._log_p = log_p[keep] - np.logaddexp.reduce(log_p[keep])
        self._start = start[keep]
        grown = _grown(z, *(row[keep] for row in rows))
        self._mu, self._kappa, self._alpha, self._beta, self._lg_ratio = grown

    def _judge(self) -> None:
        """Fire when the runs begun after the segment's start hold `threshold` of the mass."""
        best = int(self._start[np.argmax(self._log_p)])
        newer = self._start > self._segment_start
        self.change_probability = float(np.exp(self._log_p[newer]).sum())
        self.run_length = self.n - best + 1
        self._drift_detected = (
            self.change_probability > self.threshold
            and best - self._segment_start >= self.min_run
            and self.run_length >= self.min_run
        )
        if self._drift_detected:
            self._segment_start = best
        else:
            self._warning_detected = self.change_probability > self.warning_threshold


Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]
"""Per run: the Normal-Gamma posterior (mu, kappa, alpha, beta) and lgamma(alpha + 1/2) -
lgamma(alpha), which the Student-t density needs and a recursion keeps without scipy."""


def _log_predictive(
    z: float,
    mu: np.ndarray,
    kappa: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    lg_ratio: np.ndarray,
) -> np.ndarray:
    """Student-t log density of `z` under each run's posterior predictive."""
    df = 2 * alpha
    scale2 = beta * (kappa + 1) / (alpha * kappa)
    return (
        lg_ratio
        - 0.5 * np.log(df * math.pi * scale2)
        - (alpha + 0.5) * np.log1p((z - mu) ** 2 / (df * scale2))
    )


def _grown(
    z: float,
    mu: np.ndarray,
    kappa: np.ndarray,
    alpha: np.ndarray,
    beta: np.ndarray,
    lg_ratio: np.ndarray,
) -> Rows:
    """The Normal-Gamma posteriors after one more value `z`."""
    beta = beta + kappa * (z - mu) ** 2 / (2 * (kappa + 1))
    mu = (kappa * mu + z) / (kappa + 1)
    # lgamma(a + 1) - lgamma(a + 1/2) = log(a) - (lgamma(a + 1/2) - lgamma(a))
    return mu, kappa + 1, alpha + 0.5, beta, np.log(alpha) - lg_ratio
