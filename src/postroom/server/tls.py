"""TLS for the listeners: the server SSLContext (TLS 1.2+), and a self-signed certificate made on first
start when none is configured. No sockets here; the session and listener use the context."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

__all__ = ["CertificatePair", "ensure_certificate", "fingerprint", "server_context"]

# Mozilla's "intermediate" profile: forward secrecy and AEAD only for TLS 1.2; TLS 1.3 suites are fixed.
_CIPHERS = (
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
    "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305"
)


@dataclass(frozen=True, slots=True)
class CertificatePair:
    """PEM files of a certificate chain and its key; ``generated`` when postroom made them itself."""

    cert_file: Path
    key_file: Path
    generated: bool


def server_context(pair: CertificatePair) -> ssl.SSLContext:
    """A server context: TLS 1.2 or newer, modern ciphers, no compression, no renegotiation."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(_CIPHERS)
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.load_cert_chain(pair.cert_file, pair.key_file)
    return context


def ensure_certificate(
    *, cert_file: Path | None, key_file: Path | None, data_dir: Path, hostname: str
) -> CertificatePair:
    """The configured pair, or ``<data_dir>/tls/{cert,key}.pem``, made (self-signed) if missing."""
    if cert_file is not None and key_file is not None:
        return CertificatePair(cert_file, key_file, generated=False)
    folder = data_dir / "tls"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    if cert_path.exists() and key_path.exists():
        return CertificatePair(cert_path, key_path, generated=True)
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    _write_private(key_path, key_bytes)
    cert_path.write_bytes(_self_signed(key, hostname).public_bytes(serialization.Encoding.PEM))
    return CertificatePair(cert_path, key_path, generated=True)


def fingerprint(cert_file: Path) -> str:
    """SHA-256 of the first certificate's DER form, as colon-separated hex (what clients show)."""
    certificate = x509.load_pem_x509_certificate(cert_file.read_bytes())
    digest = hashlib.sha256(certificate.public_bytes(serialization.Encoding.DER)).hexdigest().upper()
    return ":".join(digest[index : index + 2] for index in range(0, len(digest), 2))


def _self_signed(key: ec.EllipticCurvePrivateKey, hostname: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)])
    now = datetime.datetime.now(datetime.UTC)
    # The loopback addresses too: a self-signed certificate mostly serves clients on this host
    # (`postroom send`, a local mail client) that connect by address.
    alt_names: list[x509.GeneralName] = [
        x509.DNSName(hostname),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ]
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=825))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(data)
