"""SMTP as a pure state machine: bytes in, events and replies out. No sockets, no clock, no disk.

The public names are re-exported here. Rooms other than ``server`` and ``delivery`` should import the value
objects from ``postroom.smtp.types`` (and replies from ``postroom.smtp.replies``) rather than from this
package, so that their import graph does not reach the connection classes (see ARCHITECTURE.md).
"""

from __future__ import annotations

from postroom.smtp.client import ClientConnection, ClientReply, ClientSettings
from postroom.smtp.client_states import ClientState, Command
from postroom.smtp.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, SmtpError
from postroom.smtp.events import (
    NEED_DATA,
    Auth,
    Bdat,
    CommandError,
    Data,
    DataChunk,
    Ehlo,
    EndOfChunk,
    EndOfData,
    Event,
    Help,
    Mail,
    NeedData,
    Noop,
    Quit,
    Rcpt,
    Rset,
    StartTls,
    Vrfy,
)
from postroom.smtp.server import ServerConnection, ServerSettings
from postroom.smtp.states import ServerState
from postroom.smtp.types import Address, Reply, Status

__all__ = [
    "NEED_DATA",
    "Address",
    "Auth",
    "Bdat",
    "ClientConnection",
    "ClientReply",
    "ClientSettings",
    "ClientState",
    "Command",
    "CommandError",
    "Data",
    "DataChunk",
    "Ehlo",
    "EndOfChunk",
    "EndOfData",
    "Event",
    "Help",
    "LocalProtocolError",
    "Mail",
    "NeedData",
    "Noop",
    "ProtocolError",
    "Quit",
    "Rcpt",
    "RemoteProtocolError",
    "Reply",
    "Rset",
    "ServerConnection",
    "ServerSettings",
    "ServerState",
    "SmtpError",
    "StartTls",
    "Status",
    "Vrfy",
]
