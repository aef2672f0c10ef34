# Two commands on a fresh machine: `make demo` runs the main job, `make test` runs every test.
# Each does its own set-up: the virtual environment, the packages, Kafka's jars, the check tools.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TOOLS_STAMP := .driftline/tools/.installed

.PHONY: lock schemas demo test unit integration fuzz rules lint tools kafka-start kafka-stop clean bench chaos bench-drift bench-gateway bench-startup

# Every package from requirements.lock (all extras, hashed), then the project itself, editable,
# built by the locked setuptools: two installs from the same lock get the same versions. uv (the
# version the dev extra pins) installs them: it downloads in parallel, a minute where pip took five.
$(STAMP): pyproject.toml requirements.lock $(BIN)/uv
	$(BIN)/uv pip install --quiet --python $(BIN)/python --require-hashes -r requirements.lock
	$(BIN)/uv pip install --quiet --python $(BIN)/python --no-deps --no-build-isolation -e .
	touch $(STAMP)

# Re-resolve the locks from pyproject.toml (its dependencies, extras and build-system) with uv,
# which resolves for every platform (--universal) and hashes every file: requirements.lock for
# the venv and CI, requirements-runtime.lock (no extra, the same versions) for the image.
LOCK := $(BIN)/uv pip compile --quiet --universal --python-version 3.11 --generate-hashes \
	--custom-compile-command "make lock"
BUILD_REQUIRES := $(BIN)/python -c 'import tomllib; \
	print(*tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"], sep="\n")'
# uv at the version pyproject's dev extra pins, so `make lock` also runs before the first lock.
$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check "$$(grep -o '"uv==[^"]*"' pyproject.toml | tr -d '"')"

lock: $(BIN)/uv
	$(BUILD_REQUIRES) | $(LOCK) --all-extras pyproject.toml - -o requirements.lock
	$(BUILD_REQUIRES) | $(LOCK) pyproject.toml - -c requirements.lock -o requirements-runtime.lock

$(TOOLS_STAMP): scripts/install-tools.sh
	bash scripts/install-tools.sh .driftline/tools
	touch $(TOOLS_STAMP)

tools: $(TOOLS_STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: $(STAMP) $(TOOLS_STAMP) lint
	$(BIN)/python -m pytest

unit: $(STAMP)
	$(BIN)/python -m pytest -m "not integration and not promtool"

integration: $(STAMP)
	$(BIN)/python -m pytest -m integration

# The fuzz tests (tests/fuzz) at 100,000 examples per target; `make test` runs them small.
fuzz: $(STAMP)
	DRIFTLINE_FUZZ_PROFILE=fuzz $(BIN)/python -m pytest -m fuzz tests/fuzz -p no:timeout

# The alert rules through promtool (check and unit tests, tests/deploy/test_alert_rules.py);
# outside `make test`: building promtool takes about 10 minutes with empty Go caches.
rules: $(STAMP)
	bash scripts/install-tools.sh .driftline/tools promtool
	$(BIN)/python -m pytest -m promtool tests/deploy/test_alert_rules.py

demo: $(STAMP)
	$(BIN)/driftline demo

# Load test on its own local broker (port 39092): every scenario, < 15 minutes; writes
# docs/benchmarks.md and docs/benchmarks.json. `make bench BENCH_QUICK=1` runs each tiny.
bench: $(STAMP)
	$(BIN)/python -m loadtest.bench $(BENCH_ARGS)

# The V2 gateway's latency at stated request rates beside the model called in-process, on the
# bench broker (port 39092) and an MLflow server of its own (port 15102); writes its block of
# docs/benchmarks.md and docs/benchmarks-gateway.json. BENCH_GATEWAY_ARGS="--seconds 5" is quicker.
bench-gateway: $(STAMP)
	$(BIN)/python -m loadtest.bench_gateway $(BENCH_GATEWAY_ARGS)

# Start-up cost (no broker): CPU, wall time and peak memory of `driftline --help` and of importing
# each service's app, the median of 5 fresh interpreters each; writes its block of
# docs/benchmarks.md.
bench-startup: $(STAMP)
	$(BIN)/python -m loadtest.bench_startup --doc docs/benchmarks.md

# Detection quality of the drift detectors (no broker): synthetic streams with known change
# points, the concept-drift switch, and TCPD's annotated series if a copy of its repository is in
# TCPD_DIR; writes docs/drift-quality.md and docs/drift-quality.json.
TCPD_DIR ?= .driftline/tcpd
bench-drift: $(STAMP)
	$(BIN)/python -m loadtest.drift_quality $(if $(wildcard $(TCPD_DIR)/annotations.json),--tcpd $(TCPD_DIR)) $(BENCH_DRIFT_ARGS)

# Fault injection on its own local broker (port 39093): workers SIGKILLed while events flow,
# every effect checked by event id; writes docs/reliability.md and docs/reliability.json.
# The integration suite runs the quick set (tests/integration/test_chaos.py).
chaos: $(STAMP)
	$(BIN)/python -m loadtest.chaos $(CHAOS_ARGS)

# The JSON Schema of specs for editors and CI (`driftline schema`), committed under schemas/;
# tests/unit/test_specs.py fails when they no longer match shared/events.py.
schemas: $(STAMP)
	$(BIN)/driftline schema > schemas/spec.schema.json
	$(BIN)/driftline schema deployment > schemas/deployment.schema.json
	$(BIN)/driftline schema stream > schemas/stream.schema.json

kafka-start: $(STAMP)
	$(BIN)/driftline kafka start

kafka-stop: $(STAMP)
	$(BIN)/driftline kafka stop

clean:
	rm -rf $(VENV) .driftline .pytest_cache .ruff_cache
