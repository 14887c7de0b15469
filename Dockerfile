# auto-healer: the self-healing agent of the Aura Hive.
#
#   docker build -t auto-healer .
#   docker run --rm -e NATS_URL=nats://nats:4222 -e REPO_URL=https://git.example/hive.git auto-healer
#
# Runs as a non-root user; playbooks are baked in at /etc/auto-healer/playbooks and can be
# replaced by mounting a directory there. Working state (checkouts, pager outbox) lives in the
# volume /var/lib/auto-healer. /healthz and /readyz are served on METRICS_PORT (9464).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# git for the checkouts; ca-certificates for HTTPS remotes and the pager; openssh for ssh remotes.
# DL3008 (pin apt versions) is ignored on purpose: Debian drops a superseded version from its
# archive at each security update, so pinned versions break the build and hold back fixes.
# Recommends are off, and the base image's tag fixes the Debian release.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates openssh-client \
    && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 auto-healer \
    && useradd --system --uid 10001 --gid auto-healer --home-dir /var/lib/auto-healer \
       --shell /usr/sbin/nologin auto-healer \
    && mkdir -p /var/lib/auto-healer \
    && chown auto-healer:auto-healer /var/lib/auto-healer

WORKDIR /opt/auto-healer
# Pinned, hashed dependencies first (a layer that changes only with the lock), then the
# project itself without dependencies, built with the locked setuptools.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY agents ./agents
COPY playbooks ./playbooks
RUN pip install --no-deps --no-build-isolation . && rm -rf build agents/*.egg-info

COPY playbooks /etc/auto-healer/playbooks

ENV PLAYBOOKS_DIR=/etc/auto-healer/playbooks \
    XDG_STATE_HOME=/var/lib/auto-healer \
    HOME=/var/lib/auto-healer \
    METRICS_PORT=9464 \
    METRICS_HOST=0.0.0.0 \
    LOG_FORMAT=json

VOLUME ["/var/lib/auto-healer"]
USER 10001:10001
WORKDIR /var/lib/auto-healer
EXPOSE 9464

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9464'), timeout=3)"]

ENTRYPOINT ["auto-healer"]
CMD ["run", "--jetstream"]
