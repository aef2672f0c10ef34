"""Online models of our own, with River's estimator API."""

from shared.models.hbp import HedgeBackpropClassifier, OnlineBackpropClassifier

__all__ = ["HedgeBackpropClassifier", "OnlineBackpropClassifier"]
