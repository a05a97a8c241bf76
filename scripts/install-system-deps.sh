#!/usr/bin/env bash
# Installs the Debian packages a make target needs, when missing, and says which and why before installing.
#   install-system-deps.sh            for `make test`: chromium (the HTML report is rendered in tests),
#                                     ShellCheck (tests/test_packaging.py lints the shell scripts)
#   install-system-deps.sh packages   for `make packages` / CI: python3-venv (build environment), rpm (the rpm
#                                     checks), python3-seccomp (runs the agent under the unit's syscall filter)
# Runs apt-get only as root on a Debian-like system; otherwise it names what is missing and exits 0 (the tests that
# need it then skip or fail with the same name).
set -euo pipefail
want=() why=()
need() {  # need PACKAGE WHY, when the check before it failed
    want+=("$1")
    why+=("  $1: $2")
}
case "${1:-}" in
    packages)
        /usr/bin/python3 -c 'import ensurepip' 2>/dev/null || need python3-venv "packaging/build.sh builds keysweep's wheel in a venv"
        /usr/bin/python3 -c 'import seccomp' 2>/dev/null || need python3-seccomp "CI runs the agent under the unit's system-call filter"
        command -v rpm >/dev/null || need rpm "CI installs, upgrades and erases the rpm" ;;
    "")
        command -v chromium >/dev/null || need chromium "tests/test_html_report.py renders the HTML fleet report"
        command -v shellcheck >/dev/null || need shellcheck "tests/test_packaging.py lints the shell scripts" ;;
    *) echo "usage: install-system-deps.sh [packages]" >&2; exit 2 ;;
esac
[ ${#want[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "install-system-deps: missing Debian packages (install them with your package manager):" >&2
    printf '%s\n' "${why[@]}" >&2
    exit 0
fi
echo "install-system-deps: installing Debian packages with apt-get (as root):"
printf '%s\n' "${why[@]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
echo "install-system-deps: installed ${want[*]}"
