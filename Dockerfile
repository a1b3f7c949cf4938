# One image for every CRM process; the command picks it:
#   docker run crm gateway api | crm contacts worker | crm sales migrate | crm dlq list support
# Health checks live in docker-compose.yml (each api has its own port), not here.

ARG PYTHON_IMAGE=python:3.11-slim

# ---- builder: the project and its runtime dependencies in a venv (no dev extras) ----
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /app

# Dependencies first, exactly as locked (each file checked against its hash), so a code
# change reuses this layer.
COPY pyproject.toml README.md requirements-runtime.lock ./
RUN pip install --require-hashes -r requirements-runtime.lock

# The code. `crm` finds deploy/gunicorn.conf.py and each service's migrations/ next to
# its packages (shared/cli.py ROOT), so the project is installed in place (editable,
# no dependencies: they are above) and /app is copied whole to the same path below.
COPY shared ./shared
COPY gateway ./gateway
COPY services ./services
COPY deploy ./deploy
RUN pip install --no-deps -e . \
    && python -m compileall -q /app/shared /app/gateway /app/services

# ---- runtime: slim, no build tools, not root ----
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="crm" \
      org.opencontainers.image.description="CRM services: crm <service> api|worker|migrate" \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CRM_DATA_DIR=/app/var

RUN groupadd --system --gid 10001 crm \
    && useradd --system --uid 10001 --gid crm --home-dir /app --no-create-home \
       --shell /usr/sbin/nologin crm

COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /app /app
# The only place the process writes (SQLite files and run files when no database URL is
# given); gunicorn's metrics files go to /tmp.
RUN mkdir -p /app/var && chown crm:crm /app/var

WORKDIR /app
USER crm:crm

EXPOSE 8000 8001 8002 8003 8004 8005

ENTRYPOINT ["crm"]
CMD ["gateway", "api"]
