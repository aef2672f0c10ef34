"""Drift detection: data drift on features, concept drift on models' errors, as alerts."""
