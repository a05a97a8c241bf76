# keysweep agent image for a DaemonSet or a sidecar (docs/packaging.md, packaging/kubernetes/, packaging/ecs/).
# The host's (or the shared volume's) files are mounted read-only under /host and reported without the prefix.
#   docker build -t keysweep:0.1.0 .
# BASE is any Debian-style image with python3 (3.11 or later), its venv module and useradd; the default is the
# public Python image. `make image` builds on keysweep-debian:bookworm instead, made from Debian packages by
# scripts/debian-image.sh, and from the fetched wheels only, so that no registry or network is needed:
#   docker build --build-arg BASE=keysweep-debian:bookworm --build-arg OFFLINE=1 --network none -t keysweep:0.1.0 .
ARG BASE=python:3.11.14-slim-bookworm

# --- build: the same hash-locked dependencies as the deb/rpm, in a virtual environment at /opt/keysweep ---
# (on x86-64 the lock includes Hyperscan, the detection gate: docs/packaging.md, "Hyperscan: the detection gate";
# everywhere ISA-L, the inflater of gzip files and zip members: "ISA-L: the inflater")
FROM ${BASE} AS build
# packaging/wheelhouse holds the locked wheels once `packaging/build.sh wheels` (run by `make image`) fetched them;
# with OFFLINE=1 pip installs from them only and the build needs no network, otherwise pip fetches what is missing
ARG OFFLINE=
WORKDIR /src
COPY packaging/requirements.lock packaging/build-requirements.lock packaging/
COPY packaging/wheelhouse/ /wheels/
RUN python3 -m venv /opt/keysweep \
    && /opt/keysweep/bin/pip install --no-cache-dir ${OFFLINE:+--no-index} --find-links /wheels --require-hashes --only-binary=:all: -r packaging/requirements.lock \
    && python3 -m venv /opt/buildtools \
    && /opt/buildtools/bin/pip install --no-cache-dir ${OFFLINE:+--no-index} --find-links /wheels --require-hashes --only-binary=:all: -r packaging/build-requirements.lock
COPY pyproject.toml setup.cfg README.md ./
COPY agent/ agent/
COPY rules/ rules/
RUN /opt/buildtools/bin/pip wheel --no-cache-dir --no-deps --no-build-isolation -w /wheels . \
    && /opt/keysweep/bin/pip install --no-cache-dir --no-deps /wheels/keysweep-*.whl \
    && /opt/keysweep/bin/python -m pip uninstall --yes pip setuptools \
    && rm -f /opt/keysweep/bin/activate* /opt/keysweep/bin/Activate.ps1

# --- runtime ---
FROM ${BASE}
LABEL org.opencontainers.image.title="keysweep" \
      org.opencontainers.image.description="Host agent that finds long-lived AWS access keys" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/keysweep /opt/keysweep
COPY packaging/container/agent.yaml /etc/keysweep/agent.yaml
# a fixed numeric identity so manifests can say runAsUser/runAsNonRoot; the state directory is its only
# writable path (mount a volume there: the root file system can be read-only). Group root with group write: the
# DaemonSet's uid 0 has no CAP_DAC_OVERRIDE, so it writes there as a member of group 0, not by override
RUN useradd --system --no-log-init --uid 10001 --user-group --home-dir /var/lib/keysweep \
        --shell /usr/sbin/nologin keysweep \
    && install -d -o keysweep -g root -m 0770 /var/lib/keysweep \
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
