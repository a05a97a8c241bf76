#!/usr/bin/env bash
# CI for the packages (called by .ci/run after `make test`; needs root on Debian 12, runs unattended):
# builds the deb and rpm, installs the deb here and exercises it (scan, capabilities, hardening score,
# conffile kept across an upgrade, remove, purge), checks the rpm (listing, digests, install/upgrade/erase in a
# scratch root and on this host with a private rpm database) and lints the Dockerfile. Purges any installed keysweep
# first; leaves the machine without the package, its user or its directories. The image itself and the deb on
# Debian 11, 12 and 13 are tested in containers by `make image-test` (tests/test_image.py, tests/test_distros.py).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "ci-packages: needs root (dpkg -i)" >&2; exit 2; }
export DEBIAN_FRONTEND=noninteractive

step() { printf '\n== ci-packages: %s\n' "$*"; }
checks=0
passed() { checks=$((checks + 1)); echo "ok: $*"; }
fail() { echo "ci-packages: FAIL: $*" >&2; exit 1; }

UNIT=/usr/lib/systemd/system/keysweep.service
CONF=/etc/keysweep/agent.yaml
# a key id that decodes to a real-looking account, with a 40-character secret beside it (not a documentation example)
KEY_ID=AKIAXYZDQCEN4B6JSJQI
SECRET=Zq3vT8nR2pL6wX9cB4mK7sD1fG5hJ0aE8uY2iO6t
PROC_KEY_ID=AKIASP2TPHJSQH3FJRUX
WATCH_KEY_ID=AKIAYVP4CIPPERUVIFXG
GZ_KEY_ID=AKIAZGQ4LB7TN2WXRDKM

work=$(mktemp -d)
scratch_root=$work/rpmroot
victim=
cleanup() {
    [ -z "$victim" ] || kill "$victim" 2>/dev/null || true
    dpkg --purge keysweep >/dev/null 2>&1 || true
    if [ -d "$work/rpmdb" ] && rpm --dbpath "$work/rpmdb" -q keysweep >/dev/null 2>&1; then
        rpm --dbpath "$work/rpmdb" -e --nodeps keysweep >/dev/null 2>&1 || true
    fi
    if getent passwd keysweep >/dev/null; then
        userdel keysweep || true
    fi
    rm -rf /etc/keysweep /var/lib/keysweep /var/cache/keysweep
    rm -rf "$work"
}
trap cleanup EXIT
dpkg --purge keysweep >/dev/null 2>&1 || true
# the package is not installed: state left in its directories (a test run as root may write the default state
# directory) would be refused by the installed agent, as it should, so start from none
rm -rf /var/lib/keysweep /var/cache/keysweep

step "build"
start=$(date +%s)
make packages
echo "built in $(( $(date +%s) - start ))s"
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' agent/keysweep/__init__.py)
deb=$(ls dist/keysweep_"$version"-1_*.deb)
rpm_file=$(ls dist/keysweep-"$version"-1.*.rpm)
ls -l "$deb" "$rpm_file"

step "deb: install"
dpkg -i "$deb"
[ "$(dpkg-query -W -f='${Status}' keysweep)" = "install ok installed" ] || fail "package not installed"
dpkg -L keysweep | grep -x "$UNIT" >/dev/null || fail "unit not listed by dpkg -L"
dpkg -L keysweep | grep -x /usr/bin/keysweep >/dev/null || fail "wrapper not listed by dpkg -L"
dpkg-query -W -f='${Conffiles}\n' keysweep | grep " $CONF " >/dev/null || fail "$CONF is not a conffile"
[ -f "$UNIT" ] && [ -f "$CONF" ] || fail "unit or configuration missing on disk"
[ "$(stat -c '%U:%G %a' "$CONF")" = "root:keysweep 640" ] || fail "$CONF owner/mode: $(stat -c '%U:%G %a' "$CONF")"
getent passwd keysweep | grep ':/usr/sbin/nologin$' >/dev/null || fail "system user keysweep missing"
for dir in /var/lib/keysweep /var/cache/keysweep; do
    [ "$(stat -c '%U %a' "$dir")" = "keysweep 700" ] || fail "$dir: $(stat -c '%U %a' "$dir")"
done

passed "installed: unit, wrapper, conffile (root:keysweep 640), user keysweep, state dirs (keysweep 700)"
tag=$(python3 -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
[ -n "$(find /opt/keysweep/lib/common/keysweep -name '*.pyc' -print -quit)" ] &&
    [ -n "$(find "/opt/keysweep/lib/$tag" -name '*.pyc' -print -quit)" ] || fail "no bytecode compiled for $tag"
passed "postinstall compiled the bytecode for this host's interpreter ($tag)"

step "deb: run the installed keysweep"
/usr/bin/keysweep --version | grep -x "keysweep $version" >/dev/null || fail "--version"
passed "keysweep --version"
mkdir -p "$work/tree/app" "$work/tree/secret"
printf '[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n' "$KEY_ID" "$SECRET" >"$work/tree/app/credentials"
printf 'nothing here\n' >"$work/tree/app/README"
printf 'INFO start\nDEBUG key=%s secret=%s\n' "$GZ_KEY_ID" "$SECRET" | gzip >"$work/tree/app/debug.log.1.gz"
set +e
XDG_STATE_HOME="$work/xdg" /usr/bin/keysweep scan --format json "$work/tree" >"$work/scan.json" 2>"$work/scan.err"
rc=$?
set -e
[ "$rc" = 1 ] || { cat "$work/scan.err" >&2; fail "scan exit code $rc, expected 1 (findings)"; }
grep -q "$KEY_ID" "$work/scan.json" || fail "scan did not report $KEY_ID"
grep -q "$GZ_KEY_ID" "$work/scan.json" || fail "scan did not report $GZ_KEY_ID (in a gzip log)"
! grep -q "$SECRET" "$work/scan.json" "$work/scan.err" || fail "scan output holds the secret"
passed "scan: exit 1 with $KEY_ID reported, secret redacted"
# on x86-64 the scan runs the Hyperscan release of this interpreter's lock (docs/packaging.md, "Hyperscan"), and
# on every platform the ISA-L release of that lock inflates (docs/packaging.md, "ISA-L")
case "$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" in
    3.9 | 3.10) lock=packaging/requirements-py39.lock ;;
    *) lock=packaging/requirements.lock ;;
esac
want=none
[ "$(uname -m)" != x86_64 ] || want="hyperscan $(sed -n 's/^hyperscan==\([^ ]*\) .*/\1/p' "$lock")"
want_inflate="isal $(sed -n 's/^isal==\([^ ]*\) .*/\1/p' "$lock")"
summary_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)["summary"][sys.argv[1]])' "$1"; }
gate=$(summary_field detection_gate <"$work/scan.json")
[ "$gate" = "$want" ] || fail "scan: detection_gate is '$gate', expected '$want' (from $lock)"
inflate=$(summary_field inflate <"$work/scan.json")
[ "$inflate" = "$want_inflate" ] || fail "scan: inflate is '$inflate', expected '$want_inflate' (from $lock)"
passed "scan: detection_gate $gate, inflate $inflate"

# The service runs as keysweep with exactly CAP_DAC_READ_SEARCH + CAP_SYS_PTRACE: that must be enough to read a
# root-only file, and without them the file is skipped (the gzip log too: no file of the tree is left readable).
install -d -m 0700 "$work/tree/secret"
mv "$work/tree/app/credentials" "$work/tree/app/debug.log.1.gz" "$work/tree/secret/"
chmod 0600 "$work/tree/secret/credentials" "$work/tree/secret/debug.log.1.gz"
chmod 0755 "$work" "$work/tree"
# HOME as systemd sets it for User=keysweep (the per-installation fingerprint key lives under it)
as_keysweep=(env HOME=/var/lib/keysweep setpriv --reuid=keysweep --regid=keysweep --clear-groups)
caps=+dac_read_search,+sys_ptrace
set +e
"${as_keysweep[@]}" --inh-caps="$caps" --ambient-caps="$caps" --bounding-set=-all,"$caps" \
    /usr/bin/keysweep scan --format json "$work/tree" >"$work/caps.json" 2>"$work/caps.err"
rc_caps=$?
"${as_keysweep[@]}" --inh-caps=-all --bounding-set=-all \
    /usr/bin/keysweep scan --format json "$work/tree" >"$work/nocaps.json" 2>"$work/nocaps.err"
rc_nocaps=$?
set -e
[ "$rc_caps" = 1 ] && grep -q "$KEY_ID" "$work/caps.json" ||
    { cat "$work/caps.err" >&2; fail "as keysweep with the two capabilities: exit $rc_caps, key not found"; }
[ "$rc_nocaps" = 0 ] && ! grep -q "$KEY_ID" "$work/nocaps.json" ||
    { cat "$work/nocaps.err" >&2; fail "as keysweep without capabilities: exit $rc_nocaps (expected 0, file unreadable)"; }
passed "capabilities: root-only file read with the two capabilities, skipped without them"


step "deb: hardening score of the installed unit"
systemd-analyze security --offline=true --threshold=25 "$UNIT" >"$work/security.txt" ||
    { cat "$work/security.txt"; fail "systemd-analyze security rates the unit above 2.5"; }
passed "$(tail -1 "$work/security.txt")"
systemd-analyze verify "$UNIT" || fail "systemd-analyze verify $UNIT"
passed "systemd-analyze verify"

step "deb: the agent under the unit's confinement (user, capabilities, seccomp filter, MDWE; no systemd here)"
confined=(/usr/bin/python3 scripts/run-like-unit.py "$UNIT" --)
cat >"$work/confined.yaml" <<YAML
state_dir: /var/lib/keysweep
scan:
  roots: [$work/tree]
  sources: [files, processes]
schedule:
  interval: 1h
  splay: 0s
watch:
  enabled: true
  homes: false
  system_paths: false
  paths: [$work/tree/app]
YAML
# the emulation is no no-op: outside its state the service cannot write, and it sees other users' processes
if "${confined[@]}" /usr/bin/touch /var/lib/keysweep-probe 2>/dev/null; then
    rm -f /var/lib/keysweep-probe
    fail "under the unit's confinement the service could write /var/lib"
fi
"${confined[@]}" /usr/bin/touch /var/lib/keysweep/probe || fail "under the unit's confinement the state is not writable"
# another user's process with a key in its environment
env -i PATH=/usr/bin:/bin AWS_ACCESS_KEY_ID=$PROC_KEY_ID AWS_SECRET_ACCESS_KEY=$SECRET \
    setpriv --reuid=nobody --regid=nogroup --clear-groups sleep 300 &
victim=$!
set +e
"${confined[@]}" /usr/bin/keysweep agent --once --config "$work/confined.yaml" >"$work/once.log" 2>&1
rc=$?
set -e
kill "$victim" 2>/dev/null || true
[ "$rc" = 1 ] || { cat "$work/once.log" >&2; fail "confined agent --once: exit $rc, expected 1"; }
grep '"event": "finding"' "$work/once.log" | grep "\"$KEY_ID\"" | grep '"kind": "file"' >/dev/null ||
    { cat "$work/once.log" >&2; fail "confined agent did not read the root-only file"; }
grep '"event": "finding"' "$work/once.log" | grep "\"$PROC_KEY_ID\"" | grep '"kind": "process"' >/dev/null ||
    { cat "$work/once.log" >&2; fail "confined agent did not read the other user's process environment"; }
! grep -q "$SECRET" "$work/once.log" || fail "the agent's log holds the secret"
passed "confined agent --once: root-only file and another user's process environment read"
# the Hyperscan gate and ISA-L load under the unit's confinement too (MemoryDenyWriteExecute, the system call filter)
set +e
"${confined[@]}" /usr/bin/keysweep scan --format json "$work/tree" >"$work/confined-scan.json" 2>"$work/confined-scan.err"
set -e
gate=$(summary_field detection_gate <"$work/confined-scan.json") ||
    { cat "$work/confined-scan.err" >&2; fail "confined scan: no JSON report"; }
[ "$gate" = "$want" ] || fail "confined scan: detection_gate is '$gate', expected '$want'"
inflate=$(summary_field inflate <"$work/confined-scan.json")
[ "$inflate" = "$want_inflate" ] || fail "confined scan: inflate is '$inflate', expected '$want_inflate'"
grep -q "$GZ_KEY_ID" "$work/confined-scan.json" || fail "confined scan: the key in the gzip log was not found"
passed "confined scan: detection_gate $gate, inflate $inflate"
# the daemon: a key written into a watched directory is found, SIGTERM stops it cleanly
"${confined[@]}" /usr/bin/keysweep agent --config "$work/confined.yaml" >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 50); do grep -q '"event": "watch.started"' "$work/daemon.log" && break; sleep 0.2; done
printf 'aws_access_key_id=%s\naws_secret_access_key=%s\n' "$WATCH_KEY_ID" "$SECRET" >"$work/tree/app/late.env"
for _ in $(seq 100); do grep -q "\"$WATCH_KEY_ID\"" "$work/daemon.log" && break; sleep 0.2; done
kill -TERM "$daemon"
set +e
wait "$daemon"
rc=$?
set -e
grep '"source": "watch"' "$work/daemon.log" | grep "\"$WATCH_KEY_ID\"" >/dev/null ||
    { cat "$work/daemon.log" >&2; fail "confined daemon: the watched write was not found"; }
[ "$rc" = 0 ] || { cat "$work/daemon.log" >&2; fail "confined daemon: exit $rc after SIGTERM"; }
passed "confined daemon: watched write found, clean exit on SIGTERM"

step "deb: upgrade keeps a changed conffile"
echo "# changed on this host" >>"$CONF"
before=$(sha256sum "$CONF")
KEYSWEEP_RELEASE=2 PATH="$PWD/.venv/bin:$PATH" bash packaging/build.sh package
deb2=$(ls dist/keysweep_"$version"-2_*.deb)
dpkg -i "$deb2"
[ "$(dpkg-query -W -f='${Version}' keysweep)" = "$version-2" ] || fail "upgrade to $version-2 did not happen"
[ "$(sha256sum "$CONF")" = "$before" ] || fail "upgrade overwrote $CONF"
[ "$(stat -c %U /var/lib/keysweep)" = keysweep ] || fail "upgrade lost the state directory's owner"
passed "upgrade to $version-2 kept $CONF"

step "deb: remove, then purge"
touch /var/lib/keysweep/state-marker
dpkg -r keysweep
[ ! -e /usr/bin/keysweep ] && [ ! -e /opt/keysweep/lib ] && [ ! -e "$UNIT" ] || fail "remove left program files"
[ -f "$CONF" ] && getent passwd keysweep >/dev/null && [ -e /var/lib/keysweep/state-marker ] ||
    fail "remove must keep configuration, user and state"
dpkg --purge keysweep
[ ! -e /etc/keysweep ] && [ ! -e /var/lib/keysweep ] && [ ! -e /var/cache/keysweep ] && [ ! -e /opt/keysweep ] ||
    fail "purge left files behind"
! getent passwd keysweep >/dev/null && ! getent group keysweep >/dev/null || fail "purge left the keysweep user"
! dpkg-query -W keysweep >/dev/null 2>&1 || fail "package still known to dpkg"
passed "remove kept configuration/state/user; purge removed them"

step "rpm: list, digests, scratch-root install/upgrade/erase"
rpm_file2=$(ls dist/keysweep-"$version"-2.*.rpm)
rpm -qpl "$rpm_file" >"$work/rpm.list"
for path in /usr/bin/keysweep "$UNIT" "$CONF" /opt/keysweep/launch.py /opt/keysweep/lib/common/keysweep/__init__.py \
        /opt/keysweep/lib/cp39 /opt/keysweep/lib/cp310 /opt/keysweep/lib/cp39-cp310 /opt/keysweep/lib/cp311 \
        /opt/keysweep/lib/cp312 /opt/keysweep/lib/cp313 /opt/keysweep/lib/cp314 /opt/keysweep/lib/cp311-cp312-cp313-cp314; do
    grep -qx "$path" "$work/rpm.list" || fail "rpm does not hold $path"
done
rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$rpm_file" | grep -x "cn $CONF" >/dev/null ||
    fail "$CONF is not %config(noreplace) in the rpm"
rpm -qp --scripts "$rpm_file" | grep 'preinstall scriptlet' >/dev/null || fail "rpm has no %pre"
rpm -K "$rpm_file" | tee "$work/rpmk" | grep 'digests OK' >/dev/null || { cat "$work/rpmk"; fail "rpm -K"; }
cat "$work/rpmk"
mkdir -p "$scratch_root"
rpm --root "$scratch_root" --initdb
# no scriptlets in the scratch root, so no keysweep user there: rpm warns and uses root for those files
in_root() { rpm --root "$scratch_root" "$@" >"$work/rpm.out" 2>&1 || { cat "$work/rpm.out" >&2; fail "rpm $*"; }; }
in_root -i --nodeps --noscripts "$rpm_file"
rpm --root "$scratch_root" -q keysweep
for path in /usr/bin/keysweep "$UNIT" "$CONF" /opt/keysweep/launch.py; do
    [ -e "$scratch_root$path" ] || fail "rpm did not install $path"
done
python3 -I -S -B "$scratch_root/opt/keysweep/launch.py" --version | grep -x "keysweep $version" >/dev/null ||
    fail "the libraries installed from the rpm do not run"
echo "# changed on this host" >>"$scratch_root$CONF"
in_root -U --nodeps --noscripts "$rpm_file2"
grep -q '^# changed on this host$' "$scratch_root$CONF" || fail "rpm upgrade overwrote $CONF"
in_root -e --nodeps --noscripts keysweep
[ -f "$scratch_root$CONF.rpmsave" ] && [ ! -e "$scratch_root/opt/keysweep/lib" ] ||
    fail "rpm erase: expected $CONF.rpmsave and the program removed"
passed "rpm: digests OK, upgrade kept $CONF, erase saved it as .rpmsave"

step "rpm: install, upgrade and erase on this host with the scriptlets (private rpm database)"
# rpm passes counts, not words: 1 on install, 2 on upgrade (then the old package's %preun/%postun get 1), 0 on erase
rpm_db=$work/rpmdb
rpm --dbpath "$rpm_db" --initdb
on_host() { rpm --dbpath "$rpm_db" "$@" >"$work/rpm.out" 2>&1 || { cat "$work/rpm.out" >&2; fail "rpm $*"; }; }
on_host -i --nodeps "$rpm_file"
getent passwd keysweep >/dev/null || fail "rpm %pre did not create the user"
[ "$(stat -c '%U:%G %a' "$CONF")" = "root:keysweep 640" ] || fail "rpm: $CONF owner/mode $(stat -c '%U:%G %a' "$CONF")"
[ "$(stat -c '%U %a' /var/lib/keysweep)" = "keysweep 700" ] || fail "rpm: state dir $(stat -c '%U %a' /var/lib/keysweep)"
/usr/bin/keysweep --version | grep -x "keysweep $version" >/dev/null || fail "keysweep from the rpm does not run"
echo "# changed on this host" >>"$CONF"
touch /var/lib/keysweep/state-marker
on_host -U --nodeps "$rpm_file2"
[ "$(rpm --dbpath "$rpm_db" -q keysweep)" = "keysweep-$version-2.$(uname -m)" ] || fail "rpm upgrade did not happen"
grep -q '^# changed on this host$' "$CONF" && [ ! -e "$CONF.rpmnew" ] || fail "rpm upgrade replaced $CONF"
/usr/bin/keysweep --version >/dev/null && getent passwd keysweep >/dev/null || fail "rpm upgrade: old scriptlets removed too much"
on_host -e keysweep
[ ! -e /usr/bin/keysweep ] && [ ! -e /opt/keysweep/lib ] && [ -f "$CONF.rpmsave" ] ||
    fail "rpm erase: program left or $CONF.rpmsave missing"
getent passwd keysweep >/dev/null && [ -e /var/lib/keysweep/state-marker ] || fail "rpm erase must keep the user and the state"
passed "rpm on this host: %pre/%post 1 and 2, %preun/%postun 1 and 0; configuration kept, .rpmsave on erase"
userdel keysweep
rm -rf /etc/keysweep /var/lib/keysweep /var/cache/keysweep

step "Dockerfile: hadolint"
.venv/bin/hadolint Dockerfile
passed "hadolint: no findings"

step "done in $(( $(date +%s) - start ))s"
echo "ci-packages: $checks passed, 0 failed"
