"""`postroom check`: is this server ready to send and receive? The config (already loaded), listener ports,
the certificate, the data folder, and each local domain's DNS (dns/deliverability.py). One line a finding:
OK / WARN / FAIL, with the record to publish; exit 1 when anything FAILs; ``--json``."""

from __future__ import annotations

import argparse
import asyncio
import datetime
import errno
import json
import os
import socket
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.x509.oid import NameOID

from postroom.config import Config
from postroom.config.schema import ListenAddress
from postroom.delivery.dkim_keys import DkimKeys
from postroom.dns import DnsError, DnsResolver
from postroom.dns.deliverability import Finding, domain_findings

__all__ = ["check_certificate", "check_data_dir", "check_ports", "register"]

_EXPIRY_WARNING = datetime.timedelta(days=30)


def register(commands: Any) -> None:
    parser = commands.add_parser("check", help="check the config, ports, certificate, data folder and DNS")
    parser.add_argument("--ip", help="this server's public address (default: the address of hostname)")
    parser.add_argument("--json", action="store_true", help="one JSON object: findings and the verdict")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    findings = [Finding("OK", "config", "config", "the configuration is valid")]
    findings += check_ports(config)
    findings.append(check_certificate(config, now=datetime.datetime.now(datetime.UTC)))
    findings.append(check_data_dir(config.data_dir))
    findings += asyncio.run(_dns_findings(config, args.ip))
    failed = any(finding.status == "FAIL" for finding in findings)
    if args.json:
        print(json.dumps({"ok": not failed, "findings": [asdict(item) for item in findings]}))
    else:
        for item in findings:
            print(f"{item.status:<4}  {item.check:<8} {item.subject}: {item.message}")
            if item.record and item.status != "OK":
                print(f"      publish: {item.record}")
    return 1 if failed else 0


def _running_pid(config: Config) -> int | None:
    try:
        pid = int((config.data_dir / "postroom.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def check_ports(config: Config) -> list[Finding]:
    """Each listener address is free to bind, or held by our running server (its pid file)."""
    findings = []
    listeners: list[tuple[str, ListenAddress]] = [
        *(("smtp", address) for address in config.smtp.listen),
        *(("submission", address) for address in config.submission.listen),
        *(("submissions", address) for address in config.submissions.listen),
    ]
    pid = _running_pid(config)
    for name, address in listeners:
        if address.port == 0:
            continue
        subject = f"{name} {address}"
        family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((address.host, address.port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    findings.append(Finding("FAIL", "port", subject, f"cannot bind: {exc.strerror}"))
                elif pid is not None:
                    findings.append(Finding("OK", "port", subject, f"in use by the running postroom ({pid})"))
                else:
                    findings.append(Finding("FAIL", "port", subject, "in use by another program"))
                continue
        findings.append(Finding("OK", "port", subject, "free"))
    return findings


def check_certificate(config: Config, *, now: datetime.datetime) -> Finding:
    """The certificate parses, is valid now and for 30 days more, and names ``hostname``."""
    path = config.tls.cert_file
    if path is None:
        return Finding(
            "WARN", "tls", "certificate", "no [tls] cert_file: a self-signed certificate is used (other "
            "servers accept it for STARTTLS, mail clients warn)"
        )
    try:
        cert = x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        return Finding("FAIL", "tls", str(path), f"cannot read the certificate: {exc}")
    expires = cert.not_valid_after_utc
    if now < cert.not_valid_before_utc or now >= expires:
        return Finding("FAIL", "tls", str(path), f"not valid now (valid {cert.not_valid_before_utc:%Y-%m-%d}"
                       f" to {expires:%Y-%m-%d})")
    names = _names(cert)
    if not any(_matches(config.hostname, name) for name in names):
        named = ", ".join(names) or "nothing"
        return Finding("FAIL", "tls", str(path), f"names {named}, not {config.hostname}")
    if expires - now < _EXPIRY_WARNING:
        days = (expires - now).days
        return Finding("WARN", "tls", str(path), f"expires {expires:%Y-%m-%d}, in {days} days")
    return Finding("OK", "tls", str(path), f"valid for {config.hostname} until {expires:%Y-%m-%d}")


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        return [str(name) for name in san.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _matches(hostname: str, name: str) -> bool:
    """RFC 6125 6.4.3: a wildcard only as the whole left-most label."""
    hostname, name = hostname.lower().rstrip("."), name.lower().rstrip(".")
    if name.startswith("*."):
        return hostname.partition(".")[2] == name[2:] and "." in name[2:]
    return hostname == name


def check_data_dir(data_dir: Path) -> Finding:
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".check-"):
            pass
    except OSError as exc:
        return Finding("FAIL", "data", str(data_dir), f"not writable: {exc.strerror or exc}")
    return Finding("OK", "data", str(data_dir), "writable")


async def _dns_findings(config: Config, ip: str | None) -> list[Finding]:
    try:
        resolver = DnsResolver(settings=config.dns)
    except DnsError as exc:
        return [Finding("FAIL", "dns", "resolver", str(exc))]
    return await domain_findings(
        resolver,
        hostname=config.hostname,
        domains=config.local.domains,
        ip=ip,
        dkim_for=DkimKeys(config.dkim_dir, selector=config.dkim.selector).expectation,
    )
