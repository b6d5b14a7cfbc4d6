"""Sender authentication of a received message before it is queued (MX listener): SPF, DKIM and DMARC by
policy/sender_auth.py, then either a refusal or the Authentication-Results header put on top of the spool.

It decides nothing itself and does not choose who is checked (the session skips our users, relay_networks).
"""

from __future__ import annotations

import asyncio

from postroom.queue import Envelope, SpoolWriter
from postroom.server.services import SessionServices
from postroom.smtp import replies
from postroom.smtp.types import Reply

__all__ = ["authenticate_message"]


async def authenticate_message(
    services: SessionServices, spool: SpoolWriter, envelope: Envelope, *, session_id: str
) -> Reply | None:
    """A refusal, or None once the Authentication-Results header is on top of the message (or nothing is
    checked here). A spilled spool file is read back and rewritten off the event loop."""
    sender_auth = services.sender_auth
    if sender_auth is None:
        return None
    try:
        spilled = spool.spilled
        limit = sender_auth.read_limit
        head = await asyncio.to_thread(spool.head, limit) if spilled else spool.head(limit)
        verdict = await sender_auth.check(
            client_ip=envelope.client_ip, helo=envelope.helo, sender=envelope.sender, message=head
        )
        services.log.info("sender_auth.checked", session_id=session_id, **verdict.summary)
        if verdict.refusal is None:
            if spilled:
                await asyncio.to_thread(spool.prepend, verdict.header)
            else:
                spool.prepend(verdict.header)
            return None
    except Exception as exc:
        services.log.failure("sender_auth.error", exc, session_id=session_id)
        return replies.LOCAL_ERROR
    reply = replies.DMARC_REJECTED if verdict.refusal == "dmarc" else replies.SPF_REJECTED
    services.maillog.message_refused(
        session_id=session_id, sender=envelope.sender, reply=str(reply), reason=f"{verdict.refusal} policy"
    )
    return reply
