"""Smarthost mode: ``[delivery] relay_host`` takes all remote mail (no MX lookup), with AUTH when
``relay_user`` is set, and then only over STARTTLS with a certificate verified for the relay's name.

It parses the setting and logs in on an open session; remote.py chooses the host and sends the mail.
"""

from __future__ import annotations

import asyncio
import ipaddress
import ssl

from postroom.config.schema import DeliverySettings
from postroom.delivery.smtp_session import HostRefused, SmtpSession

__all__ = ["is_ip", "parse_relay_host", "relay_login"]


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_relay_host(value: str) -> tuple[str, int] | None:
    """ "host:port" or "[v6]:port" into (host, port); "" is None. Raises ValueError for anything else."""
    if not value:
        return None
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"relay_host must be 'host:port', not {value!r}")
    return host.lower(), int(port)


async def relay_login(
    session: SmtpSession, host: str, *, settings: DeliverySettings, context: ssl.SSLContext
) -> None:
    """STARTTLS (verified against ``host``), EHLO again, AUTH as relay_user. Raises HostRefused (a
    temporary failure: an operator can fix the relay's settings) when any step is not possible."""
    if not session.conn.supports("STARTTLS"):
        raise HostRefused(
            None, f"smarthost {host} does not offer STARTTLS: credentials are never sent in clear"
        )
    try:
        secured = await session.starttls(context, host)
    except ssl.SSLError as exc:
        raise HostRefused(None, f"smarthost {host}: TLS failed ({exc.reason or exc})") from None
    if not secured:
        raise HostRefused(None, f"smarthost {host} refused STARTTLS")
    password = await asyncio.to_thread(_read_password, settings)
    reply = await session.login(settings.relay_user, password)
    if reply.code != 235:
        raise HostRefused(reply, f"smarthost {host} refused AUTH as {settings.relay_user}")


def _read_password(settings: DeliverySettings) -> str:
    if settings.relay_password_file is None:
        raise HostRefused(None, "relay_user is set without relay_password_file")
    try:
        with open(settings.relay_password_file, encoding="utf-8") as file:
            return file.readline().rstrip("\r\n")
    except OSError as exc:
        raise HostRefused(None, f"cannot read relay_password_file ({exc.strerror})") from None
