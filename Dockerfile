# syntax=docker/dockerfile:1
# One image for every Driftline service: the service is the command.
#   docker build -t driftline .
#   docker run driftline ingestion worker      # any of: ingestion router feedback drift learner
#   docker run driftline topics create
# Every dependency ships wheels for this base, so no stage needs a compiler.
# Reproducible: every package comes from requirements-runtime.lock (exact versions, hashes, no
# MLflow server stack: `make lock` writes it from pyproject.toml), bytecode is hash-based, and
# SOURCE_DATE_EPOCH dates what the build writes. Pin the base too with
#   --build-arg PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:<digest>

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG SOURCE_DATE_EPOCH=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH}
WORKDIR /src
# The locked packages first (a layer that changes only with the lock), into a venv the final
# stage copies; then the project itself, built by the locked setuptools, without dependencies.
RUN python -m venv /opt/driftline
COPY requirements-runtime.lock ./
RUN /opt/driftline/bin/pip install --no-cache-dir --require-hashes -r requirements-runtime.lock
COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN /opt/driftline/bin/pip install --no-cache-dir --no-deps --no-build-isolation . \
    && /opt/driftline/bin/python -m compileall -q --invalidation-mode unchecked-hash \
       /opt/driftline/lib

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="driftline" \
      org.opencontainers.image.description="Real-time MLOps on Kafka: one image, the service is the command" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/driftline/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DRIFTLINE_WEB_HOST=0.0.0.0 \
    DRIFTLINE_DATA_DIR=/var/lib/driftline \
    DRIFTLINE_LOG_FORMAT=json
RUN groupadd --system --gid 10001 driftline \
    && useradd --system --uid 10001 --gid driftline --no-create-home \
       --home-dir /var/lib/driftline --shell /usr/sbin/nologin driftline \
    && mkdir -p /var/lib/driftline \
    && chown driftline:driftline /var/lib/driftline
COPY --from=build /opt/driftline /opt/driftline
COPY deploy/docker/healthcheck.py /opt/driftline/healthcheck.py
USER 10001:10001
WORKDIR /var/lib/driftline
# Web ports (/health, /metrics) of ingestion, router, feedback, drift and learner.
EXPOSE 6061 6062 6063 6064 6065
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/driftline/healthcheck.py"]
ENTRYPOINT ["driftline"]
CMD ["--help"]
