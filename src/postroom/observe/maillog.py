"""The mail log: one method per mail event, one line each, keyed by queue id or session id (chasquid).

``grep <queue-id>`` on the log tells a message's whole story. Client-supplied strings are sanitised here.
"""

from __future__ import annotations

from postroom.observe.log import Logger, sanitize

__all__ = ["MailLog"]


class MailLog:
    """Writes mail events through a Logger."""

    def __init__(self, log: Logger) -> None:
        self._log = log

    def connected(self, *, session_id: str, client: str, listener: str) -> None:
        self._log.info("session.connect", session_id=session_id, client=client, listener=listener)

    def refused_connection(self, *, client: str, listener: str, reply: str, reason: str = "") -> None:
        fields = {"client": client, "listener": listener, "reply": reply}
        if reason:  # why, for the operator: "deny list", "listed in zen.spamhaus.org", ...
            fields["reason"] = reason
        self._log.info("session.refused", **fields)

    def disconnected(
        self,
        *,
        session_id: str,
        client: str,
        messages: int,
        reason: str,
        listener: str = "",
        bytes_in: int = 0,
        bytes_out: int = 0,
    ) -> None:
        self._log.info(
            "session.close",
            session_id=session_id,
            client=client,
            messages=messages,
            reason=reason,
            listener=listener,
            bytes_in=bytes_in,
            bytes_out=bytes_out,
        )

    def rejected(self, *, session_id: str, command: str, argument: str, reply: str, reason: str = "") -> None:
        fields = {
            "session_id": session_id,
            "command": command,
            "argument": sanitize(argument),
            "reply": reply,
        }
        if reason:
            fields["reason"] = reason
        self._log.info("smtp.rejected", **fields)

    def queued(
        self, *, queue_id: str, session_id: str, sender: str, recipients: int, size: int, client: str
    ) -> None:
        self._log.info(
            "message.queued",
            queue_id=queue_id,
            session_id=session_id,
            sender=sanitize(sender),
            rcpts=recipients,
            size=size,
            client=client,
        )

    def recipient_accepted(self, *, session_id: str, rcpt: str, reply: str) -> None:
        self._log.info("smtp.rcpt_accepted", session_id=session_id, rcpt=sanitize(rcpt), reply=reply)

    def message_refused(self, *, session_id: str, sender: str, reply: str, reason: str) -> None:
        self._log.info(
            "message.refused", session_id=session_id, sender=sanitize(sender), reply=reply, reason=reason
        )
