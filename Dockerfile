# syntax=docker/dockerfile:1
#
# The dicom-gateway image: one image for both services. The command chooses the service:
#   docker run dicom-gateway:<version> ingest --config /etc/dicom-gateway/gateway.toml
# compose/docker-compose.yml runs it twice, as `ingest` and as `export`.

# Pinned to a patch release on a named Debian release, so that a rebuild next month installs
# the same interpreter; move it on purpose (and together with the build stage below).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm

# --- build stage: install the project and its dependencies into a virtual environment --------
# Kept apart so that the source tree, pip's build dependencies and caches stay out of the image.
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/dicom-gateway

WORKDIR /src
# Only what the package build needs (the .dockerignore keeps the rest out of the context too).
# tests/unit/test_compose.py checks that every package pyproject.toml includes is copied here.
COPY pyproject.toml README.md ./
COPY contracts ./contracts
COPY gateway ./gateway
COPY ingest ./ingest
COPY export ./export
COPY dicom_gateway ./dicom_gateway
COPY gateway_client ./gateway_client
# A regular (non-editable) install: the image must not depend on /src, which is not copied on.
RUN /opt/dicom-gateway/bin/pip install .

# --- runtime stage ---------------------------------------------------------------------------
FROM ${PYTHON_IMAGE}

# Logs go straight to the container's stdout (no buffering that a crash would lose).
ENV PATH=/opt/dicom-gateway/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1

COPY --from=build /opt/dicom-gateway /opt/dicom-gateway

# A fixed, unprivileged user: nothing in the gateway needs root (the DICOM port 11112 is above
# 1024), and a fixed uid lets operators own a bind-mounted /data. /data must exist and belong
# to that user before VOLUME, so a new named volume is created with that ownership.
RUN groupadd --system --gid 10001 gateway \
    && useradd --system --uid 10001 --gid gateway --home-dir /data --no-create-home \
        --shell /usr/sbin/nologin gateway \
    && mkdir /data \
    && chown gateway:gateway /data
USER gateway

# The spool, the outbox, the export state: everything the services write lives under /data,
# so it must be a volume (the spool holds acknowledged instances not yet in object storage).
WORKDIR /data
VOLUME ["/data"]

# 11112: DICOM (ingest). 8080 / 8081: /healthz, /readyz and /metrics of ingest / export.
EXPOSE 11112 8080 8081

# Liveness of the default command. The slim image has no curl or wget, but it has Python.
# HEALTH_PORT is the HTTP port of the service the container runs: 8080 for `serve` and `ingest`,
# 8081 for `export` (compose/docker-compose.yml sets its own readiness checks instead).
# urlopen raises on a refused connection or a non-2xx answer, so the exit status says it all.
ENV HEALTH_PORT=8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:${HEALTH_PORT}/healthz', timeout=4)"

ENTRYPOINT ["dicom-gateway"]
CMD ["serve"]
