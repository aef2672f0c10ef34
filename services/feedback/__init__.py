"""Feedback joiner: joins late (or early) ground truth to the predictions it belongs to."""
