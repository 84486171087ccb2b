# syntax=docker/dockerfile:1
#
# customer360 gateway image.
#   docker build -t customer360:local .
#   docker run --rm -p 8000:8000 --env-file .env customer360:local
# The default command serves; `c360 migrate` (and every other c360 command)
# runs from the same image.

ARG PYTHON_IMAGE=python:3.11-slim

# ---------------------------------------------------------------- builder --
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# A compiler only for the odd dependency without a wheel; it never reaches
# the runtime stage.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
# The runtime dependencies exactly as locked (hash-checked), in a layer of their own so that
# a code change does not reinstall them; no dev/test extras, no faker.
COPY requirements.txt requirements.txt
RUN pip install --require-hashes -r requirements.txt
# .dockerignore keeps tests, the local .venv, .git and caches out of the context.
COPY . .
# The package itself; its build backend is pinned in pyproject.toml.
RUN pip install --no-deps . \
 && python -c "import customer360"

# ---------------------------------------------------------------- runtime --
FROM ${PYTHON_IMAGE} AS runtime

LABEL org.opencontainers.image.title="customer360" \
      org.opencontainers.image.description="Customer 360 lifecycle gateway (GraphQL, Kafka consumers)"

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    C360_ENV=production

RUN groupadd --system --gid 10001 c360 \
 && useradd --system --uid 10001 --gid c360 --home-dir /home/c360 --create-home \
            --shell /usr/sbin/nologin c360

COPY --from=builder /opt/venv /opt/venv

WORKDIR /home/c360
USER 10001:10001

EXPOSE 8000

# Liveness only (the process answers); readiness is /readyz, which compose
# and orchestrators check separately. Over HTTPS when the process terminates TLS itself
# (C360_TLS_CERT_FILE); its certificate names the public host, not 127.0.0.1, so this
# loopback probe does not verify it.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import os, ssl, sys, urllib.request; tls = bool(os.environ.get('C360_TLS_CERT_FILE')); url = ('https' if tls else 'http') + '://127.0.0.1:8000/healthz'; ctx = ssl._create_unverified_context() if tls else None; sys.exit(0 if urllib.request.urlopen(url, timeout=4, context=ctx).status == 200 else 1)"]

CMD ["c360", "serve", "--host", "0.0.0.0", "--port", "8000"]
