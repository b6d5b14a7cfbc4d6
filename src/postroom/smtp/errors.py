"""The protocol's error tree: ProtocolError carries the reply a server would send.

SmtpError                 (reply + reason; the session turns it into its reply in one place)
 └── ProtocolError
      ├── LocalProtocolError   we (the caller of the state machine) broke the rules: a bug
      └── RemoteProtocolError  the peer broke the rules: answer with .reply
"""

from __future__ import annotations

from postroom.smtp.types import Reply

__all__ = ["LocalProtocolError", "ProtocolError", "RemoteProtocolError", "SmtpError"]


class SmtpError(Exception):
    """Carries the reply for the client and a reason for the log; they differ on purpose."""

    def __init__(self, reply: Reply, *, reason: str) -> None:
        super().__init__(reason)
        self.reply = reply
        self.reason = reason


class ProtocolError(SmtpError):
    """A violation of the SMTP rules."""


class LocalProtocolError(ProtocolError):
    """The code driving the state machine used it wrongly (e.g. answered an event twice)."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol does not accept."""
