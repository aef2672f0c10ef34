"""Online learner: predict-then-learn on labeled predictions, publishing signed snapshots."""
