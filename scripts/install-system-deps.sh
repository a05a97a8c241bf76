#!/usr/bin/env bash
# Installs the Debian packages the tests (or, with "bench", the benchmark) need, when missing and when we may.
set -euo pipefail
want=()
if [ "${1:-}" = "bench" ]; then
    command -v rg >/dev/null || want+=(ripgrep)
elif [ "${1:-}" = "packages" ]; then
    /usr/bin/python3.11 -c 'import ensurepip' 2>/dev/null || want+=(python3.11-venv)
    /usr/bin/python3 -c 'import seccomp' 2>/dev/null || want+=(python3-seccomp)
    command -v rpm >/dev/null || want+=(rpm)
else
    command -v chromium >/dev/null || want+=(chromium)
    command -v rpm >/dev/null || want+=(rpm)
fi
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-system-deps: missing ${want[*]}; install them with your package manager" >&2
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
