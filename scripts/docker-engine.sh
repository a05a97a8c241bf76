#!/usr/bin/env bash
# Makes a Docker engine available for the image and distribution tests (`make image-test`): when no engine answers,
# installs Debian's docker.io if dockerd is missing, starts dockerd (as root) and waits for its socket. Idempotent:
# does nothing when an engine already answers. The engine gets no bridge network and no iptables rules: the tests'
# containers run with --network none, and image builds use the host's network (--network host).
#   scripts/docker-engine.sh          start if needed
#   scripts/docker-engine.sh --check  exit 0 when an engine answers, 1 otherwise (never installs or starts)
set -euo pipefail
log=${KEYSWEEP_DOCKERD_LOG:-/var/log/keysweep-dockerd.log}

engine_answers() {
    command -v docker >/dev/null && docker version --format '{{.Server.Version}}' >/dev/null 2>&1
}

if engine_answers; then
    exit 0
fi
[ "${1:-}" = --check ] && exit 1
if [ "$(id -u)" != 0 ]; then
    echo "docker-engine: no Docker engine answers, and starting one needs root (or start yours and retry)" >&2
    exit 2
fi
if ! command -v dockerd >/dev/null || ! command -v docker >/dev/null; then
    echo "docker-engine: installing Debian's docker.io (the Docker engine, for the image tests): apt-get install docker.io"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends docker.io >/dev/null
fi
echo "docker-engine: starting dockerd (log: $log)"
setsid dockerd --bridge=none --iptables=false --ip-masq=false --ip-forward=false </dev/null >"$log" 2>&1 &
for _ in $(seq 120); do
    if engine_answers; then
        echo "docker-engine: engine $(docker version --format '{{.Server.Version}}') is up"
        exit 0
    fi
    sleep 0.5
done
tail -20 "$log" >&2
echo "docker-engine: dockerd did not answer within 60 s (log above)" >&2
exit 1
