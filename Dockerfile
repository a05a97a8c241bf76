# keysweep agent image for a DaemonSet or a sidecar (docs/packaging.md, packaging/kubernetes/, packaging/ecs/).
# The host's (or the shared volume's) files are mounted read-only under /host and reported without the prefix.
#   docker build -t keysweep:0.1.0 .

# --- build: the same hash-locked dependencies as the deb/rpm, in a virtual environment at /opt/keysweep ---
FROM python:3.11.14-slim-bookworm AS build
WORKDIR /src
COPY packaging/requirements.lock packaging/build-requirements.lock packaging/
RUN python -m venv /opt/keysweep \
    && /opt/keysweep/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        -r packaging/requirements.lock \
    && python -m venv /opt/buildtools \
    && /opt/buildtools/bin/pip install --no-cache-dir --require-hashes --only-binary=:all: \
        -r packaging/build-requirements.lock
COPY pyproject.toml setup.cfg README.md ./
COPY agent/ agent/
COPY rules/ rules/
RUN /opt/buildtools/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels . \
    && /opt/keysweep/bin/pip install --no-cache-dir --no-deps /wheels/keysweep-*.whl \
    && /opt/keysweep/bin/python -m pip uninstall --yes pip setuptools \
    && rm -f /opt/keysweep/bin/activate* /opt/keysweep/bin/Activate.ps1

# --- runtime ---
FROM python:3.11.14-slim-bookworm
LABEL org.opencontainers.image.title="keysweep" \
      org.opencontainers.image.description="Host agent that finds long-lived AWS access keys" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/keysweep /opt/keysweep
COPY packaging/container/agent.yaml /etc/keysweep/agent.yaml
# a fixed numeric identity so manifests can say runAsUser/runAsNonRoot; the state directory is its only
# writable path (mount a volume there: the root file system can be read-only)
RUN useradd --system --no-log-init --uid 10001 --user-group --home-dir /var/lib/keysweep \
        --shell /usr/sbin/nologin keysweep \
    && install -d -o keysweep -g keysweep -m 0700 /var/lib/keysweep \
    && chmod 0644 /etc/keysweep/agent.yaml
ENV PATH=/opt/keysweep/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
USER 10001:10001
WORKDIR /var/lib/keysweep
VOLUME ["/var/lib/keysweep"]
HEALTHCHECK --interval=60s --timeout=15s --start-period=120s --retries=3 \
    CMD ["keysweep", "status", "--check", "--config", "/etc/keysweep/agent.yaml"]
ENTRYPOINT ["keysweep"]
CMD ["agent", "--config", "/etc/keysweep/agent.yaml"]
