"""Load test of the Driftline pipeline on a real broker, against raw-Kafka and bare-Faust ceilings.

`python -m loadtest.bench` (``make bench``) runs every scenario and writes ``docs/benchmarks.md``;
``--quick`` runs each scenario tiny, as the integration test does.
"""
