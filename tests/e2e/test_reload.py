"""`postroom reload` (SIGHUP): new TLS connections get the new certificate; the server keeps running."""

from __future__ import annotations

import hashlib
import json
import smtplib
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import trustme

from tests.helpers.server import serve_process, wait_for, write_config


def _served_certificate(address: tuple[str, int]) -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we compare the certificate itself, whoever signed it
    with socket.create_connection(address, timeout=10) as raw, context.wrap_socket(raw) as tls:
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return hashlib.sha256(der).digest()


def _issue(ca: trustme.CA, cert_file: Path, key_file: Path) -> bytes:
    cert = ca.issue_cert("mx.postroom.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    cert.private_key_pem.write_to_path(str(key_file))
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(cert.cert_chain_pems[0].bytes().decode())).digest()


def test_reload_swaps_the_certificate_without_a_restart(tmp_path: Path) -> None:
    ca = trustme.CA()
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    first = _issue(ca, cert_file, key_file)
    _, config_file = write_config(tmp_path, tls={"cert_file": str(cert_file), "key_file": str(key_file)})
    with serve_process(config_file) as served:
        lines = wait_for(lambda: "TLS " in "".join(served.output) and "".join(served.output), what="banner")
        port = int(lines.split("submissions ")[1].split()[0].rsplit(":", 1)[1])
        address = ("127.0.0.1", port)
        assert _served_certificate(address) == first
        second = _issue(ca, cert_file, key_file)
        result = subprocess.run(
            [sys.executable, "-m", "postroom", "-c", str(config_file), "reload"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        wait_for(lambda: _served_certificate(address) == second, what="the new certificate")
        assert served.terminate() == 0
    stopped = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "reload"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert stopped.returncode == 69
    assert stopped.stderr.startswith("postroom: no running server for ")


def test_reload_reopens_the_log_file_after_logrotate_moved_it(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path)
    log_file = config.log_file
    with serve_process(config_file) as served:
        wait_for(lambda: log_file.exists() and "server.started" in log_file.read_text(), what="the log file")
        rotated = log_file.with_name("postroom.log.1")
        log_file.rename(rotated)  # what logrotate does before it signals the server
        result = subprocess.run(
            [sys.executable, "-m", "postroom", "-c", str(config_file), "reload"],
            capture_output=True, text=True, timeout=30, check=False,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        wait_for(log_file.exists, what="a new log file after the reload")
        with smtplib.SMTP(*served.address, timeout=10) as client:
            client.sendmail("a@example.test", ["postmaster@postroom.test"], b"Subject: rotated\r\n\r\nhi\r\n")
        fresh = wait_for(lambda: "queued" in log_file.read_text() and log_file.read_text(), what="new lines")
        assert served.terminate() == 0
    assert "server.started" in rotated.read_text()
    assert "server.started" not in fresh
    assert all(json.loads(line)["event"] for line in fresh.splitlines())
