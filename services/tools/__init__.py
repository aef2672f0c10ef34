"""Operator tools over the topics: `driftline trace` and `driftline status`."""
