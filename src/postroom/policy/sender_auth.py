"""Sender authentication for inbound mail: runs SPF, DKIM and DMARC for one message and decides its fate.

The session calls two things: ``refuses_ehlo`` when MAIL arrives, and ``check`` at end of data, which
returns the Authentication-Results header to put on top of the message and what to do with it (deliver,
file into Junk, reject). The checks themselves live in spf.py, dkim.py and dmarc.py; replies are the
session's (this room returns facts, not SMTP text).
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from postroom.config.schema import SenderAuthSettings
from postroom.dns import Resolver
from postroom.policy.authresults import EhloNote, authentication_results
from postroom.policy.dkim import DkimVerdict, verify_signatures
from postroom.policy.dmarc import DmarcVerdict, OrganizationalDomains, evaluate
from postroom.policy.spf import SpfVerdict, check_helo, check_mail_from

__all__ = ["JUNK_MARKER", "AuthVerdict", "SenderAuth"]

# Put above the Authentication-Results header of a message that goes to the Junk folder. Local delivery
# looks for it at the very start of the stored message only, where no client can put anything (the
# session's own Received header always comes first otherwise), and files the message into ".Junk".
JUNK_MARKER = b"X-Postroom-Folder: Junk\r\n"

Action = Literal["deliver", "junk", "reject"]
Refusal = Literal["dmarc", "spf"]


@dataclass(frozen=True, slots=True)
class AuthVerdict:
    """What the checks found and what to do: ``header`` goes on top of the stored message."""

    header: bytes
    action: Action
    refusal: Refusal | None
    spf: SpfVerdict
    helo: SpfVerdict
    dkim: tuple[DkimVerdict, ...]
    dmarc: DmarcVerdict

    @property
    def summary(self) -> dict[str, str]:
        """Key/values for the log line: each result and the action."""
        return {
            "spf": self.spf.result,
            "spf_helo": self.helo.result,
            "dkim": ",".join(f"{item.result}:{item.domain}".rstrip(":") for item in self.dkim),
            "dmarc": self.dmarc.result,
            "dmarc_policy": self.dmarc.policy,
            "from_domain": self.dmarc.from_domain,
            "action": self.action,
        }


class SenderAuth:
    """SPF, DKIM and DMARC for the MX listener, configured by [sender_auth]; one per App."""

    def __init__(
        self,
        *,
        settings: SenderAuthSettings,
        resolver: Resolver,
        hostname: str,
        organizations: OrganizationalDomains | None = None,
        chance: Callable[[], float] = random.random,
    ) -> None:
        self._settings = settings
        self._resolver = resolver
        self._hostname = hostname.rstrip(".").lower()
        self._organizations = organizations or OrganizationalDomains()
        self._chance = chance

    @property
    def read_limit(self) -> int:
        """How much of a message ``check`` wants: one octet past the DKIM size cap tells "too big"."""
        return self._settings.dkim_max_size + 1

    def ehlo_note(self, helo: str, client_ip: str) -> EhloNote:
        """ "ours" when the client says it is this server; "foreign-literal" for an address not its own."""
        name = helo.rstrip(".").lower()
        if name == self._hostname:
            return "ours"
        if name.startswith("[") and name.endswith("]"):
            literal = name[1:-1].removeprefix("ipv6:")
            try:
                claimed, actual = ipaddress.ip_address(literal), ipaddress.ip_address(client_ip)
            except ValueError:
                return "foreign-literal"
            if isinstance(actual, ipaddress.IPv6Address) and actual.ipv4_mapped is not None:
                actual = actual.ipv4_mapped
            return None if claimed == actual else "foreign-literal"
        return None

    def exempt(self, client_ip: str) -> bool:
        """A client in ``exempt_networks`` (by default this host itself) is not checked."""
        try:
            address = ipaddress.ip_address(client_ip)
        except ValueError:
            return False
        return any(address in network for network in self._settings.exempt_networks)

    def refuses_ehlo(self, helo: str, client_ip: str) -> bool:
        if not self._settings.reject_ehlo_impersonation or self.exempt(client_ip):
            return False
        return self.ehlo_note(helo, client_ip) is not None

    async def check(self, *, client_ip: str, helo: str, sender: str, message: bytes) -> AuthVerdict:
        """All checks for one message. ``message`` is its first ``read_limit`` octets (all of a small one)."""
        too_big = len(message) > self._settings.dkim_max_size
        spf, helo_spf, dkim = await asyncio.gather(
            check_mail_from(self._resolver, ip=client_ip, sender=sender, helo=helo),
            check_helo(self._resolver, ip=client_ip, helo=helo),
            self._dkim(message, too_big=too_big),
        )
        dmarc = await evaluate(
            message,
            resolver=self._resolver,
            organizations=self._organizations,
            spf=spf,
            dkim=dkim,
            chance=self._chance,
        )
        action, refusal = self._decide(spf, dmarc, dkim_skipped=too_big)
        header = authentication_results(
            authserv_id=self._hostname,
            sender=sender,
            helo=helo,
            spf=(spf, helo_spf),
            dkim=dkim,
            dmarc=dmarc,
            ehlo=self.ehlo_note(helo, client_ip),
        )
        if action == "junk":
            header = JUNK_MARKER + header
        return AuthVerdict(header, action, refusal, spf, helo_spf, dkim, dmarc)

    async def _dkim(self, message: bytes, *, too_big: bool) -> tuple[DkimVerdict, ...]:
        if too_big:
            # RFC 8601 2.7.1: "neutral" would claim a signature was looked at; none was, by local policy
            reason = f"message over {self._settings.dkim_max_size} octets, not verified"
            return (DkimVerdict("none", reason=reason),)
        return await verify_signatures(
            message,
            resolver=self._resolver,
            max_signatures=self._settings.dkim_max_signatures,
            min_key_bits=self._settings.dkim_min_key_bits,
        )

    def _decide(
        self, spf: SpfVerdict, dmarc: DmarcVerdict, *, dkim_skipped: bool
    ) -> tuple[Action, Refusal | None]:
        settings = self._settings
        if dkim_skipped and dmarc.result == "fail":
            return "deliver", None  # DKIM was not looked at: a fail may be ours, not the sender's
        if dmarc.result == "fail" and dmarc.policy == "reject" and settings.dmarc_reject:
            return "reject", "dmarc"
        if spf.result == "fail" and settings.reject_spf_fail:
            return "reject", "spf"
        if dmarc.result == "fail" and dmarc.policy in ("quarantine", "reject"):
            # a p=reject we do not honour is still worth a quarantine (RFC 7489 6.7 lets receivers soften)
            return ("junk" if settings.quarantine == "junk" else "deliver"), None
        return "deliver", None
