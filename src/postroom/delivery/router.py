"""Routing of claimed recipients: which go to a local Maildir, which travel by SMTP, grouped how.

A recipient with the ``smtp`` transport whose domain is one of ours is delivered locally: mail for our own
domains never leaves over the network. Remote recipients are grouped by (message, domain): one group is one
SMTP transaction (RFC 5321 3.3). It delivers nothing itself.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence

from postroom.delivery.outcome import failed
from postroom.delivery.remote import RemoteCourier
from postroom.dns import TemporaryDnsError
from postroom.queue import DueRecipient, Outcome

__all__ = ["Router"]


class Router:
    """Splits due recipients into local ones and remote groups, and hands the groups to the courier."""

    def __init__(self, *, local_domains: Collection[str], remote: RemoteCourier | None) -> None:
        self._local_domains = frozenset(domain.lower() for domain in local_domains)
        self._remote = remote

    def set_local_domains(self, domains: Collection[str]) -> None:
        """[local] domains after a reload: mail for them never leaves over the network from now on."""
        self._local_domains = frozenset(domain.lower() for domain in domains)

    def split(self, due: Sequence[DueRecipient]) -> tuple[list[DueRecipient], list[list[DueRecipient]]]:
        local: list[DueRecipient] = []
        groups: dict[tuple[str, str], list[DueRecipient]] = {}
        for recipient in due:
            if recipient.transport == "local":
                local.append(recipient)
            elif recipient.domain in self._local_domains:
                local.append(dataclasses.replace(recipient, mailbox=recipient.mailbox.lower()))
            else:
                groups.setdefault((recipient.queue_id, recipient.domain), []).append(recipient)
        return local, list(groups.values())

    async def deliver(self, group: Sequence[DueRecipient]) -> list[Outcome]:
        """One remote group's outcomes; without a remote courier, a temporary failure for each."""
        if self._remote is None:
            error = TemporaryDnsError(group[0].domain, "MX", "remote delivery is not configured")
            return [failed(recipient, error) for recipient in group]
        return await self._remote.deliver(group)
