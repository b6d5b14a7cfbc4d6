"""`postroom dkim keygen|show`: the key file, the exact TXT record, refusals in one line, nonzero exits."""

from __future__ import annotations

import re
import stat
import subprocess
import sys
from pathlib import Path

import dkim

from postroom.delivery.dkim_keys import DkimKeys, record_public_key


def postroom(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", "-c", "p.toml", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _setup(tmp_path: Path, extra: str = "") -> DkimKeys:
    (tmp_path / "p.toml").write_text(f'data_dir = "data"\n{extra}')
    return DkimKeys(tmp_path / "data" / "dkim")


def _record(output: str) -> tuple[str, str]:
    name = re.search(r"^  name:  (\S+)$", output, re.MULTILINE)
    value = re.search(r"^  value: (.+)$", output, re.MULTILINE)
    assert name is not None, output
    assert value is not None, output
    return name.group(1), value.group(1)


def _zone_strings(output: str) -> list[str]:
    line = next(line for line in output.splitlines() if " IN TXT ( " in line)
    return re.findall(r'"([^"]*)"', line)


def test_keygen_makes_a_private_key_file_and_prints_the_record(tmp_path: Path) -> None:
    keys = _setup(tmp_path)
    result = postroom("dkim", "keygen", "Example.TEST", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    path = tmp_path / "data" / "dkim" / "example.test" / "postroom.pem"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    name, value = _record(result.stdout)
    assert (name, value) == keys.txt_record("example.test")
    assert name == "postroom._domainkey.example.test"
    assert value.startswith("v=DKIM1; k=rsa; p=")
    # a 2048-bit key's record is over 255 octets: the zone-file form cuts it into character-strings
    strings = _zone_strings(result.stdout)
    assert len(strings) == 2
    assert all(len(part) <= 255 for part in strings)
    assert "".join(strings) == value
    # what the DNS would hold is a key dkimpy accepts, of the size asked for
    assert dkim.evaluate_pk(name.encode(), value.encode())[1] == 2048


def test_show_prints_the_same_record_again(tmp_path: Path) -> None:
    _setup(tmp_path)
    made = postroom(
        "dkim", "keygen", "example.test", "--algorithm", "ed25519", "--selector", "s2026", cwd=tmp_path
    )
    assert made.returncode == 0, made.stderr
    shown = postroom("dkim", "show", "example.test", "--selector", "s2026", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert _record(shown.stdout) == _record(made.stdout)
    name, value = _record(shown.stdout)
    assert name == "s2026._domainkey.example.test"
    assert value.startswith("v=DKIM1; k=ed25519; p=")
    assert len(record_public_key(value) or "") == 44  # 32 octets in base64 (RFC 8463 4.2)


def test_keygen_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    keys = _setup(tmp_path, "[dkim]\nrsa_bits = 1024\n")
    assert postroom("dkim", "keygen", "example.test", cwd=tmp_path).returncode == 0
    before = keys.load("example.test")
    again = postroom("dkim", "keygen", "example.test", cwd=tmp_path)
    assert again.returncode == 1
    assert again.stderr.count("\n") == 1
    assert "already has a DKIM key" in again.stderr
    assert "--force" in again.stderr
    assert keys.load("example.test") == before
    forced = postroom("dkim", "keygen", "example.test", "--force", cwd=tmp_path)
    assert forced.returncode == 0, forced.stderr
    assert keys.load("example.test").public_key != before.public_key


def test_show_for_a_domain_without_a_key_is_one_line_and_nonzero(tmp_path: Path) -> None:
    _setup(tmp_path)
    result = postroom("dkim", "show", "unknown.test", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("postroom: no DKIM key for unknown.test")
    assert result.stderr.count("\n") == 1


def test_bad_domains_and_sizes_are_refused(tmp_path: Path) -> None:
    _setup(tmp_path)
    for args in (("../etc",), ("a/b.test",), ("example.test", "--bits", "512")):
        result = postroom("dkim", "keygen", *args, cwd=tmp_path)
        assert result.returncode == 1, args
        assert result.stderr.startswith("postroom: ")
        assert result.stderr.count("\n") == 1
    ed = postroom("dkim", "keygen", "example.test", "--algorithm", "ed25519", "--bits", "4096", cwd=tmp_path)
    assert ed.returncode == 64
    assert not (tmp_path / "data" / "dkim" / "example.test").exists()


def test_the_configured_selector_and_algorithm_are_the_defaults(tmp_path: Path) -> None:
    _setup(tmp_path, '[dkim]\nselector = "mail"\nalgorithm = "ed25519"\n')
    result = postroom("dkim", "keygen", "example.test", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert _record(result.stdout)[0] == "mail._domainkey.example.test"
    assert "k=ed25519" in _record(result.stdout)[1]
