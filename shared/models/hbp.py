"""Hedge Backpropagation: an online deep network that learns how deep it should be.

Sahoo, Pham, Lu and Hoi, "Online Deep Learning: Learning Deep Neural Networks on the Fly",
IJCAI 2018. Written with numpy only, for River's classifier API.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator
from typing import Any

import numpy as np
import pandas as pd
from river import base

__all__ = ["HedgeBackpropClassifier", "OnlineBackpropClassifier"]

Params = dict[str, np.ndarray]


class HedgeBackpropClassifier(base.MiniBatchClassifier):
    r"""Deep feed-forward network trained online with Hedge Backpropagation (HBP).

    The input $h^{(0)} = x$ and every hidden layer $h^{(l)}$, $l = 1, \dots, L$ (ReLU), feed
    their own softmax output head $f^{(l)}$: $L + 1$ heads, the one on the input a linear model.
    The prediction is the mixture $\sum_{l=0}^{L} \alpha^{(l)} f^{(l)}(x)$, with $\alpha$
    uniform at the start. After each sample, every head pays its loss through the Hedge rule

    $$\alpha^{(l)} \leftarrow \max\left(\alpha^{(l)} \beta^{\hat\ell^{(l)}}, \frac{s}{L}\right)$$

    followed by renormalisation to a sum of one, so the weight moves to the depths that currently
    predict best (in the paper: shallow heads early in a stream, deeper ones once they have
    learned). Hedge needs losses in $[0, 1]$ (the paper cites Freund and Schapire for it), which a
    cross-entropy is not: as in the authors' code, $\hat\ell^{(l)}$ is the cross-entropy
    $\ell^{(l)}$ of head $l$ rescaled over the heads of this step, so the best head of the step
    pays 0 and the worst 1. The parameters take one SGD step on the $\alpha$-weighted
    cross-entropy $\sum_l \alpha^{(l)} \ell^{(l)}$ with the $\alpha$ from before the Hedge
    update: head $l$ gets $\alpha^{(l)}$ times its own gradient, and hidden layer $l$ gets the
    gradients of all heads at or above it, each weighted by its $\alpha$.

    Parameters
    ----------
    n_layers
        Number of hidden layers $L$; with the head on the input there are $L + 1$ heads.
    hidden_units
        Width of every hidden layer.
    beta
        Hedge discount $\beta \in (0, 1]$: a head's weight is multiplied by $\beta$ to the power
        of its loss. Smaller values move weight between depths faster.
    s
        Smoothing $s \in [0, 1]$: no head's weight falls below $s / L$ before renormalisation, so
        a depth that loses for a while still trains its layers and can win the weight back.
    learning_rate
        Step size of the plain SGD update (batch size one).
    seed
        Seed of the weight initialisation; with a seed, training is deterministic.

    Notes
    -----
    - **Features.** Inputs are numeric features looked up by name. The feature set is fixed by the
      first sample learned (the columns of the first frame for `learn_many`); features first seen
      later are ignored, and a missing feature reads as 0.0 (so does a NaN cell in a frame, which
      is how pandas shows a missing key). Online networks need standardised inputs: put a
      `preprocessing.StandardScaler()` in front of the model, as in the example.
    - **Classes.** Binary and multiclass alike, labels are discovered online: a new label adds
      one output to every head (LeCun-normal weights from the seeded generator, zero bias) and
      leaves the rest of the network untouched. Before the first `learn_one` the model predicts
      nothing (an empty dict).
    - **Mini-batches.** `predict_proba_many` runs one batched forward pass over the whole frame.
      `learn_many` reads the frame as a single float matrix but then takes one SGD step and one
      Hedge step per row, in order: this keeps the paper's batch-size-one semantics, so it gives
      exactly the same model as calling `learn_one` on each row; it only saves the per-row dict
      handling.
    - **Paper and code.** Architecture and updates follow Algorithm 1 of the paper, including
      the head on the input ($L + 1$ heads, `alphas[0]` is depth zero), and the authors' Keras
      code (github.com/LIBOL/ODL) for the rescaled Hedge loss, which the paper leaves implicit.
      The paper does not state an initialisation; that code gets Keras's Glorot-uniform default.
      Here the hidden layers are He-initialised, the standard for ReLU: with Glorot weights the
      signal halves in variance at every layer, and the 20-layer network fell 9 to 17 points
      behind on our benchmark (docs/benchmarks-hbp.md).

    Examples
    --------
    >>> from river import datasets, evaluate, metrics, preprocessing
    >>> from shared.models import HedgeBackpropClassifier

    >>> model = preprocessing.StandardScaler() | HedgeBackpropClassifier(n_layers=3, seed=42)
    >>> evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    Accuracy: 88.95%

    Where the weight went, from the head on the input (depth 0) to the deepest:

    >>> model["HedgeBackpropClassifier"].alphas.round(2)
    array([0.07, 0.07, 0.43, 0.44])

    """

    def __init__(
        self,
        n_layers: int = 20,
        hidden_units: int = 100,
        beta: float = 0.99,
        s: float = 0.2,
        learning_rate: float = 0.01,
        seed: int | None = None,
    ) -> None:
        self.n_layers = n_layers
        self.hidden_units = hidden_units
        self.beta = beta
        self.s = s
        self.learning_rate = learning_rate
        self.seed = seed
        self._validate()
        self._reset()

    def _validate(self) -> None:
        problems = {
            "n_layers": "give at least one hidden layer" if self.n_layers < 1 else "",
            "hidden_units": "give at least one unit" if self.hidden_units < 1 else "",
            "beta": "" if 0.0 < self.beta <= 1.0 else "choose a discount in (0, 1]; paper: 0.99",
            "s": "" if 0.0 <= self.s <= 1.0 else "choose a smoothing in [0, 1]; paper: 0.2",
            "learning_rate": "use a positive step size" if self.learning_rate <= 0.0 else "",
        }
        for name, remedy in problems.items():
            if remedy:
                value = getattr(self, name)
                raise ValueError(f"{type(self).__name__}: {name}={value!r} is invalid, {remedy}")

    def _reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._alphas = self._initial_alphas()
        self._features: list[Hashable] = []
        self._classes: list[base.typing.ClfTarget] = []
        self._class_index: dict[base.typing.ClfTarget, int] = {}
        self._params: Params = {}

    @classmethod
    def _unit_test_params(cls) -> Iterator[dict[str, Any]]:
        yield {"n_layers": 3, "hidden_units": 8, "seed": 42}

    @property
    def _multiclass(self) -> bool:
        return True

    @property
    def alphas(self) -> np.ndarray:
        """Current weight of each of the L + 1 heads, depth 0 (the input) first; a copy that
        sums to one."""
        return self._alphas.copy()

    def learn_one(self, x: dict[base.typing.FeatureName, Any], y: base.typing.ClfTarget) -> None:
        if not self._params:
            self._initialise(x.keys())
        features = self._features
        row = np.fromiter((x.get(f, 0.0) for f in features), dtype=float, count=len(features))
        self._learn_row(row, self._target_index(y))

    def learn_many(self, X: pd.DataFrame, y: pd.Series) -> None:
        if X.empty:
            return
        if not self._params:
            self._initialise(X.columns)
        for row, label in zip(self._matrix(X), y, strict=True):
            self._learn_row(row, self._target_index(label))

    def predict_proba_one(
        self, x: dict[base.typing.FeatureName, Any], **kwargs: Any
    ) -> dict[base.typing.ClfTarget, float]:
        if not self._classes:
            return {}
        features = self._features
        row = np.fromiter((x.get(f, 0.0) for f in features), dtype=float, count=len(features))
        probas = self._mixture(row[None, :])[0]
        return dict(zip(self._classes, probas.tolist(), strict=True))

    def predict_proba_many(self, X: pd.DataFrame) -> pd.DataFrame:
        if not self._classes:
            return pd.DataFrame(index=X.index)
        return pd.DataFrame(self._mixture(self._matrix(X)), index=X.index, columns=self._classes)

    def _initial_alphas(self) -> np.ndarray:
        return np.full(self.n_layers + 1, 1.0 / (self.n_layers + 1))

    def _hedge(self, losses: np.ndarray) -> None:
        """Discount each head's weight by its rescaled loss, floor it at s / L and renormalise."""
        alphas = self._alphas * self.beta ** _rescaled(losses)
        np.maximum(alphas, self.s / self.n_layers, out=alphas)
        self._alphas = alphas / alphas.sum()

    def _weights(self, fan_in: int, shape: tuple[int, ...], gain: float) -> np.ndarray:
        """Normal weights of variance gain / fan_in from the seeded generator: gain 2 (He) keeps
        the scale of the signal through a ReLU layer, gain 1 (LeCun) suits a softmax head."""
        return self._rng.standard_normal(shape) * np.sqrt(gain / max(fan_in, 1))

    def _initialise(self, features: Iterable[Hashable]) -> None:
        # Sorted so that the weight of a feature does not depend on the key order of the first
        # sample; by repr because feature names may mix types.
        self._features = sorted(features, key=repr)
        n_in, width, depth = len(self._features), self.hidden_units, self.n_layers
        self._params = {
            "input_weights": self._weights(n_in, (n_in, width), gain=2.0),
            "hidden_weights": self._weights(width, (depth - 1, width, width), gain=2.0),
            "hidden_biases": np.zeros((depth, width)),
            "input_head_weights": np.zeros((n_in, 0)),
            "input_head_biases": np.zeros(0),
            "head_weights": np.zeros((depth, width, 0)),
            "head_biases": np.zeros((depth, 0)),
        }

    def _target_index(self, y: base.typing.ClfTarget) -> int:
        index = self._class_index.get(y)
        if index is None:
            index = self._class_index[y] = len(self._classes)
            self._classes.append(y)
            params, width, n_in = self._params, self.hidden_units, len(self._features)
            params["input_head_weights"] = np.concatenate(
                [params["input_head_weights"], self._weights(n_in, (n_in, 1), gain=1.0)], axis=1
            )
            params["input_head_biases"] = np.append(params["input_head_biases"], 0.0)
            column = self._weights(width, (self.n_layers, width, 1), gain=1.0)
            params["head_weights"] = np.concatenate([params["head_weights"], column], axis=2)
            params["head_biases"] = np.pad(params["head_biases"], ((0, 0), (0, 1)))
        return index

    def _matrix(self, X: pd.DataFrame) -> np.ndarray:
        known = X.reindex(columns=self._features, fill_value=0.0)
        return known.to_numpy(dtype=float, na_value=0.0)

    def _forward(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Hidden activations, shape (L, n, H), and the log-probabilities of the L + 1 heads,
        shape (L + 1, n, C), the head on the input first."""
        params = self._params
        hidden_weights, biases = params["hidden_weights"], params["hidden_biases"]
        hidden = np.empty((self.n_layers, X.shape[0], self.hidden_units))
        np.maximum(X @ params["input_weights"] + biases[0], 0.0, out=hidden[0])
        for layer in range(1, self.n_layers):
            pre_activation = hidden[layer - 1] @ hidden_weights[layer - 1]
            pre_activation += biases[layer]
            np.maximum(pre_activation, 0.0, out=hidden[layer])
        logits = np.empty((self.n_layers + 1, X.shape[0], len(self._classes)))
        logits[0] = X @ params["input_head_weights"] + params["input_head_biases"]
        np.matmul(hidden, params["head_weights"], out=logits[1:])
        logits[1:] += params["head_biases"][:, None, :]
        logits -= logits.max(axis=-1, keepdims=True)
        logits -= np.log(np.exp(logits).sum(axis=-1, keepdims=True))
        return hidden, logits

    def _mixture(self, X: np.ndarray) -> np.ndarray:
        """Alpha-weighted mixture of the heads' class probabilities, shape (n, C)."""
        _, log_probas = self._forward(X)
        return np.tensordot(self._alphas, np.exp(log_probas), axes=1)

    def _gradients(
        self, x: np.ndarray, y: int, loss_weights: np.ndarray
    ) -> tuple[np.ndarray, Params]:
        r"""Head losses and the gradient of their weighted sum for one sample.

        Parameters
        ----------
        x
            Feature vector in the order of the model's features, shape (d,).
        y
            Index of the true class.
        loss_weights
            Weight $w_l$ of each head's loss, shape (L + 1,): the alphas for the gradient of the
            training loss, or the alphas times minus the learning rate for an SGD step, which
            folds the step size into a few small vectors instead of the large weight arrays.

        Returns
        -------
        The cross-entropy $\ell^{(l)}$ of every head, shape (L + 1,), and the gradient of
        $\sum_l w_l \ell^{(l)}$ for every array of parameters.

        """
        params = self._params
        hidden, log_probas = self._forward(x[None, :])
        hidden, log_probas = hidden[:, 0, :], log_probas[:, 0, :]
        losses = -log_probas[:, y]
        d_logits = np.exp(log_probas)
        d_logits[:, y] -= 1.0
        d_logits *= loss_weights[:, None]
        d_hidden_logits = d_logits[1:]
        d_hidden_from_heads = np.matmul(params["head_weights"], d_hidden_logits[:, :, None])
        d_hidden_from_heads = d_hidden_from_heads[:, :, 0]
        # Backpropagate top-down: layer l collects its own head's gradient plus layer l + 1's.
        active = hidden > 0.0
        deltas = np.empty_like(hidden)
        deltas[-1] = delta = d_hidden_from_heads[-1] * active[-1]
        hidden_weights = params["hidden_weights"]
        for layer in range(self.n_layers - 2, -1, -1):
            delta = (d_hidden_from_heads[layer] + hidden_weights[layer] @ delta) * active[layer]
            deltas[layer] = delta
        gradients = {
            "input_weights": np.outer(x, deltas[0]),
            "hidden_weights": np.einsum("li,lj->lij", hidden[:-1], deltas[1:]),
            "hidden_biases": deltas,
            "input_head_weights": np.outer(x, d_logits[0]),
            "input_head_biases": d_logits[0],
            "head_weights": np.einsum("li,lj->lij", hidden, d_hidden_logits),
            "head_biases": d_hidden_logits,
        }
        return losses, gradients

    def _learn_row(self, x: np.ndarray, y: int) -> None:
        losses, steps = self._gradients(x, y, -self.learning_rate * self._alphas)
        for name, step in steps.items():
            self._params[name] += step
        self._hedge(losses)


def _rescaled(losses: np.ndarray) -> np.ndarray:
    """Losses mapped affinely onto [0, 1] (lowest to 0, highest to 1); all zero when tied."""
    low, spread = losses.min(), np.ptp(losses)
    if spread == 0.0:
        return np.zeros_like(losses)
    return (losses - low) / spread


class OnlineBackpropClassifier(HedgeBackpropClassifier):
    """Plain online backprop: alpha fixed on the last head, no hedge update.

    The same network and SGD step as `HedgeBackpropClassifier`, with all the weight on the
    deepest head from start to end, so the intermediate heads get no gradient and the model is
    an ordinary deep network trained one sample at a time: the baseline of the HBP paper. The
    unused heads are still evaluated, which keeps one code path; next to the hidden layers they
    cost little.

    Parameters
    ----------
    n_layers
        Number of hidden layers.
    hidden_units
        Width of every hidden layer.
    learning_rate
        Step size of the plain SGD update (batch size one).
    seed
        Seed of the weight initialisation; with a seed, training is deterministic.

    Examples
    --------
    >>> from river import datasets, evaluate, metrics, preprocessing
    >>> from shared.models import OnlineBackpropClassifier

    >>> model = preprocessing.StandardScaler() | OnlineBackpropClassifier(n_layers=3, seed=42)
    >>> evaluate.progressive_val_score(datasets.Phishing(), model, metrics.Accuracy())
    Accuracy: 88.95%

    """

    def __init__(
        self,
        n_layers: int = 20,
        hidden_units: int = 100,
        learning_rate: float = 0.01,
        seed: int | None = None,
    ) -> None:
        super().__init__(
            n_layers=n_layers, hidden_units=hidden_units, learning_rate=learning_rate, seed=seed
        )

    def _initial_alphas(self) -> np.ndarray:
        alphas = np.zeros(self.n_layers + 1)
        alphas[-1] = 1.0
        return alphas

    def _hedge(self, losses: np.ndarray) -> None:
        """Keep all the weight on the last head."""
