from __future__ import annotations

import hashlib
import os
import stat

import pytest
from keysweep.errors import ConfigError
from keysweep.fingerprint import ENV_KEY, KEY_FILE, Fingerprinter, default_state_dir, redact
from keysweep.models import Location

KID = "AKIAXYZDQCEN4B6JSJQI"
SECRET = "Zq3vY8pL0mN2bX7cR5tK9wE1sD4fG6hJ8kL0pQ2z"


def test_fingerprints_are_keyed_not_plain_hashes():
    a, b = Fingerprinter(b"a" * 32), Fingerprinter(b"b" * 32)
    assert a.secret_fingerprint(SECRET) != b.secret_fingerprint(SECRET)
    assert a.key_fingerprint(KID, SECRET) != b.key_fingerprint(KID, SECRET)
    plain = {hashlib.sha256(x.encode()).hexdigest() for x in (SECRET, KID, KID + SECRET, KID + ":" + SECRET)}
    for fp in (a.secret_fingerprint(SECRET), a.key_fingerprint(KID, SECRET), a.key_fingerprint(KID, None)):
        assert not any(p.startswith(fp) for p in plain)
        assert SECRET not in fp and KID not in fp


def test_fingerprints_are_stable_and_separate_domains():
    fp = Fingerprinter(b"k" * 32)
    assert fp.key_fingerprint(KID, SECRET) == Fingerprinter(b"k" * 32).key_fingerprint(KID, SECRET)
    assert fp.key_fingerprint(KID, SECRET) != fp.key_fingerprint(KID, None)
    assert fp.key_fingerprint(KID, SECRET) != fp.key_fingerprint(KID, SECRET[:-1] + "y")
    assert fp.secret_fingerprint(SECRET) != fp.key_fingerprint(KID, SECRET)
    assert len(fp.key_fingerprint(KID, None)) == 32
    assert "k" * 8 not in repr(fp)


def test_finding_fingerprint_depends_on_host_and_place():
    fp = Fingerprinter(b"k" * 32)
    kfp = fp.key_fingerprint(KID, SECRET)
    here = Location(kind="file", path="/etc/app.env", line=3)
    moved_line = Location(kind="file", path="/etc/app.env", line=9)
    elsewhere = Location(kind="file", path="/etc/other.env", line=3)
    base = fp.finding_fingerprint("host-1", here, kfp)
    assert base == fp.finding_fingerprint("host-1", moved_line, kfp)  # lines move; the place is the file
    assert base != fp.finding_fingerprint("host-1", elsewhere, kfp)
    assert base != fp.finding_fingerprint("host-2", here, kfp)
    assert base != fp.finding_fingerprint("host-1", here, fp.key_fingerprint(KID, None))


def test_installation_key_is_created_0600_and_reused(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    state = tmp_path / "state"
    one = Fingerprinter.from_config(None, state)
    key_file = state / KEY_FILE
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert len(key_file.read_bytes()) == 32
    two = Fingerprinter.from_config(None, state)
    assert one.secret_fingerprint(SECRET) == two.secret_fingerprint(SECRET)
    other = Fingerprinter.from_config(None, tmp_path / "other")
    assert other.secret_fingerprint(SECRET) != one.secret_fingerprint(SECRET)


def test_default_state_dir_is_created_0700(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "keysweep"
    fp = Fingerprinter.from_config(None, None)
    assert stat.S_IMODE((tmp_path / "xdg" / "keysweep").stat().st_mode) == 0o700
    assert (tmp_path / "xdg" / "keysweep" / KEY_FILE).exists()
    assert fp.secret_fingerprint(SECRET) == Fingerprinter.from_config(None, None).secret_fingerprint(SECRET)


def test_default_state_dir_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "state" / "keysweep"


def test_org_key_and_env_override(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    org = "organisation-wide-fingerprint-key"
    a = Fingerprinter.from_config(org, tmp_path / "a")
    b = Fingerprinter.from_config(org, tmp_path / "b")
    assert a.secret_fingerprint(SECRET) == b.secret_fingerprint(SECRET)  # the fleet can match across hosts
    assert not (tmp_path / "a" / KEY_FILE).exists()
    monkeypatch.setenv(ENV_KEY, "environment-fingerprint-key-1234")
    c = Fingerprinter.from_config(org, tmp_path / "a")
    assert c.secret_fingerprint(SECRET) != a.secret_fingerprint(SECRET)
    assert c.secret_fingerprint(SECRET) == Fingerprinter(b"environment-fingerprint-key-1234").secret_fingerprint(SECRET)


def test_short_org_key_is_rejected_without_echoing_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    with pytest.raises(ConfigError) as exc:
        Fingerprinter.from_config("tooshort", tmp_path)
    assert "tooshort" not in str(exc.value)


def test_corrupt_key_file_is_moved_aside_and_replaced(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    (tmp_path / KEY_FILE).write_bytes(b"x" * 100)
    (tmp_path / KEY_FILE).chmod(0o600)
    fp = Fingerprinter.from_config(None, tmp_path)
    assert fp.source == "installation"
    [aside] = (tmp_path / "corrupt").iterdir()
    assert aside.name.startswith(KEY_FILE + ".") and aside.read_bytes() == b"x" * 100
    assert (tmp_path / KEY_FILE).stat().st_size == 32
    assert Fingerprinter.from_config(None, tmp_path).secret_fingerprint(SECRET) == fp.secret_fingerprint(SECRET)


def test_key_file_readable_by_others_is_refused(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    Fingerprinter.from_config(None, tmp_path)
    (tmp_path / KEY_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="mode 0644"):
        Fingerprinter.from_config(None, tmp_path)


def test_per_run_key_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    a = Fingerprinter.from_config(None, None, per_run=True)
    b = Fingerprinter.from_config(None, None, per_run=True)
    assert a.source == "per-run" and a.secret_fingerprint(SECRET) != b.secret_fingerprint(SECRET)
    assert not (tmp_path / "xdg").exists()


def test_non_utf8_environment_key_is_used_as_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_KEY, os.fsdecode(b"\xff" * 20))  # how Python shows a non-UTF-8 environment value
    fp = Fingerprinter.from_config(None, tmp_path)
    assert fp.source == "configured"
    assert fp.secret_fingerprint(SECRET) == Fingerprinter(b"\xff" * 20).secret_fingerprint(SECRET)


def test_uncreatable_state_dir_is_a_config_error(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="not-a-dir"):
        Fingerprinter.from_config(None, blocker / "state")


def test_redact():
    assert redact(SECRET) == "Zq3v…"
    assert redact("short") == "…"
    assert redact(None) is None
    assert SECRET[4:8] not in redact(SECRET)


def test_key_created_under_a_strict_umask_is_0600_and_usable(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    (tmp_path / "state").mkdir(mode=0o700)
    old = os.umask(0o277)  # a new file would be 0400
    try:
        fp = Fingerprinter.from_config(None, tmp_path / "state")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "state" / KEY_FILE).stat().st_mode) == 0o600
    assert Fingerprinter.from_config(None, tmp_path / "state").secret_fingerprint(SECRET) == fp.secret_fingerprint(
        SECRET
    )
