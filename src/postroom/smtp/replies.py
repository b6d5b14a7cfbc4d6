"""The one catalogue of SMTP replies: code + enhanced status (RFC 3463) + one human sentence.

Code and tests use the same names. Texts never reveal internals (config keys, library errors, paths).
Replies that depend on a value are functions (``queued(queue_id)``).
"""

from __future__ import annotations

from postroom.smtp.types import Reply, Status


def _r(code: int, status: str | None, text: str) -> Reply:
    if status is None:
        return Reply(code, None, text)
    klass, subject, detail = (int(part) for part in status.split("."))
    return Reply(code, Status(klass, subject, detail), text)


# --- 2xx ------------------------------------------------------------------------------------------
OK = _r(250, "2.0.0", "Ok")
SENDER_OK = _r(250, "2.1.0", "Sender ok")
RECIPIENT_OK = _r(250, "2.1.5", "Recipient ok")
RESET_OK = _r(250, "2.0.0", "Reset ok")
NOOP_OK = _r(250, "2.0.0", "Ok")
CHUNK_OK = _r(250, "2.0.0", "Chunk received")
VRFY_CANNOT = _r(252, "2.5.0", "Cannot verify the user, but will accept the message and attempt delivery")
HELP = _r(
    214,
    "2.0.0",
    "Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP\nSee RFC 5321 for their use",
)
START_TLS_READY = _r(220, "2.0.0", "Ready to start TLS")


def greeting(hostname: str) -> Reply:
    return _r(220, None, f"{hostname} ESMTP postroom")


def closing(hostname: str) -> Reply:
    return _r(221, "2.0.0", f"{hostname} closing connection")


def helo_ok(hostname: str, client_name: str) -> Reply:
    return _r(250, None, f"{hostname} greets {client_name}")


def ehlo_ok(hostname: str, client_name: str, extensions: list[str]) -> Reply:
    # RFC 5321 4.1.1.1: the first line names us; the keywords follow, one per line. No enhanced code on EHLO.
    return _r(250, None, "\n".join([f"{hostname} greets {client_name}", *extensions]))


def queued(queue_id: str) -> Reply:
    return _r(250, "2.0.0", f"Ok: queued as {queue_id}")


START_DATA = _r(354, None, "End data with <CR><LF>.<CR><LF>")

# --- 4xx ------------------------------------------------------------------------------------------
SHUTTING_DOWN = _r(421, "4.3.2", "Server shutting down, try again later")
# Connection limits ([smtp] max_connections, max_connections_per_ip): the sentence says which one.
TOO_MANY_CONNECTIONS = _r(421, "4.7.0", "Too many connections to this server in total, try again later")
TOO_MANY_CONNECTIONS_FROM_IP = _r(
    421, "4.7.0", "Too many concurrent connections from your address, try again later"
)
COMMAND_TIMEOUT = _r(421, "4.4.2", "Timeout waiting for a command, closing connection")
DATA_TIMEOUT = _r(421, "4.4.2", "Timeout waiting for message data, closing connection")
TOO_MANY_ERRORS = _r(421, "4.7.0", "Too many errors, closing connection")
LOCAL_ERROR = _r(451, "4.3.0", "Local error in processing, try again later")
QUEUE_UNAVAILABLE = _r(451, "4.3.0", "Cannot queue the message now, try again later")
INSUFFICIENT_STORAGE = _r(452, "4.3.1", "Insufficient system storage, try again later")
TOO_MANY_RECIPIENTS = _r(452, "4.5.3", "Too many recipients for one message, send the rest in another")
# Rate limits and greylisting (policy/limits.py): each sentence names the limit that was reached.
CONNECTION_RATE_EXCEEDED = _r(
    421, "4.7.0", "Too many new connections from your address in the last minute, try again later"
)
TOO_MANY_MESSAGES = _r(421, "4.7.0", "Too many messages in one connection, reconnect to send more")
RECIPIENT_RATE_EXCEEDED = _r(
    451, "4.7.1", "Too many recipients from this sender in the last hour, try again later"
)
BYTE_RATE_EXCEEDED = _r(451, "4.7.1", "Too many bytes sent by this account in the last hour, try again later")
GREYLISTED = _r(451, "4.7.1", "Greylisted: first mail from your server to this recipient, try again later")

# --- 5xx: the command itself --------------------------------------------------------------------
SYNTAX_ERROR = _r(500, "5.5.2", "Syntax error, command unrecognized")
LINE_TOO_LONG = _r(500, "5.5.6", "Line too long")
BARE_LF_IN_COMMAND = _r(500, "5.5.2", "Command lines must end with <CR><LF>")
NUL_IN_COMMAND = _r(500, "5.5.2", "Command contains a NUL character")
NON_ASCII_COMMAND = _r(500, "5.5.2", "Command contains non-ASCII octets without SMTPUTF8")
PARAMETER_SYNTAX = _r(501, "5.5.4", "Syntax error in parameters or arguments")
HELO_SYNTAX = _r(501, "5.5.4", "Syntax: EHLO domain-or-address-literal")
MAIL_SYNTAX = _r(501, "5.5.4", "Syntax: MAIL FROM:<address> [parameters]")
RCPT_SYNTAX = _r(501, "5.5.4", "Syntax: RCPT TO:<address> [parameters]")
BAD_SENDER_ADDRESS = _r(501, "5.1.7", "Bad sender address syntax")
BAD_RECIPIENT_ADDRESS = _r(501, "5.1.3", "Bad recipient address syntax")
ADDRESS_TOO_LONG = _r(501, "5.1.3", "Address too long")
BDAT_SYNTAX = _r(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]")
NO_ARGUMENTS_ALLOWED = _r(501, "5.5.4", "This command takes no arguments")
NOT_IMPLEMENTED = _r(502, "5.5.1", "Command not implemented")
BAD_SEQUENCE = _r(503, "5.5.1", "Bad sequence of commands")
NEED_HELO = _r(503, "5.5.1", "Say EHLO or HELO first")
NEED_MAIL = _r(503, "5.5.1", "Need MAIL before RCPT")
NEED_RCPT = _r(503, "5.5.1", "Need RCPT before DATA")
NESTED_MAIL = _r(503, "5.5.1", "Sender already given; use RSET to start over")
DATA_AFTER_BDAT = _r(503, "5.5.1", "DATA cannot follow BDAT in one transaction")
UNKNOWN_PARAMETER = _r(555, "5.5.4", "Unsupported MAIL or RCPT parameter")
BAD_BODY_PARAMETER = _r(501, "5.5.4", "BODY must be 7BIT, 8BITMIME or BINARYMIME")
BINARYMIME_NEEDS_BDAT = _r(503, "5.5.1", "BODY=BINARYMIME requires BDAT")
BAD_SIZE_PARAMETER = _r(501, "5.5.4", "SIZE must be a decimal number")
BAD_NOTIFY_PARAMETER = _r(501, "5.5.4", "NOTIFY must be NEVER, or one or more of SUCCESS, FAILURE, DELAY")
BAD_ORCPT_PARAMETER = _r(501, "5.5.4", "ORCPT must be an address type, a semicolon and an xtext address")
BAD_RET_PARAMETER = _r(501, "5.5.4", "RET must be FULL or HDRS")
BAD_ENVID_PARAMETER = _r(501, "5.5.4", "ENVID must be xtext of at most 100 characters")
SMTPUTF8_REQUIRED = _r(553, "5.6.7", "Non-ASCII address requires the SMTPUTF8 parameter")
AUTH_OK = _r(235, "2.7.0", "Authentication successful")
AUTH_FAILED = _r(535, "5.7.8", "Authentication credentials invalid")
AUTH_REQUIRED = _r(530, "5.7.0", "Authentication required")
AUTH_TEMPORARY_FAILURE = _r(454, "4.7.0", "Temporary authentication failure, try again later")
AUTH_THROTTLED = _r(454, "4.7.0", "Too many failed logins, try again later")
SENDER_NOT_OWNED = _r(553, "5.7.1", "Sender address not owned by the authenticated user")
AUTH_CANCELLED = _r(501, "5.7.0", "Authentication cancelled")
AUTH_RESPONSE_SYNTAX = _r(501, "5.5.2", "Cannot decode the authentication response")
# RFC 5802 5.1: a client that demands channel binding ("p=" in its gs2 header) of SCRAM-SHA-256 (not -PLUS).
AUTH_CHANNEL_BINDING = _r(501, "5.5.4", "Channel binding is not offered here; use SCRAM-SHA-256 without it")
HTTP_COMMAND = _r(500, "5.5.1", "This is an SMTP server, not an HTTP server")

# --- 5xx: the message ---------------------------------------------------------------------------
MESSAGE_TOO_BIG = _r(552, "5.3.4", "Message size exceeds the fixed maximum message size")
BARE_LINE_ENDING = _r(550, "5.6.0", "Message contains a bare <CR> or <LF>; lines must end with <CR><LF>")
TEXT_LINE_TOO_LONG = _r(550, "5.5.6", "Message contains a line longer than 1000 octets")
TOO_MANY_HOPS = _r(554, "5.4.6", "Too many Received headers: mail loop detected")
MESSAGE_HAS_NUL = _r(550, "5.6.0", "Message contains a NUL octet")

# --- 5xx: addresses and policy ------------------------------------------------------------------
NO_SUCH_USER = _r(550, "5.1.1", "No such user here")
RELAY_DENIED = _r(554, "5.7.1", "Relay access denied")
SOURCE_ROUTE_RELAY_DENIED = _r(554, "5.7.1", "Source routes are not used for routing; relay access denied")
# The front door (policy/connect.py, policy/dnsbl.py, server/gate.py): sent as the greeting, then closed.
TALKED_BEFORE_GREETING = _r(554, "5.5.1", "Protocol error: you sent data before the greeting")


def client_denied(ip: str) -> Reply:
    return _r(554, "5.7.1", f"Access denied: connections from [{ip}] are not accepted here")


def client_blocklisted(ip: str, zone: str) -> Reply:
    # Postfix's wording, which operators and list maintainers search for.
    return _r(554, "5.7.1", f"Service unavailable; client [{ip}] blocked using {zone}")


TRANSACTION_FAILED = _r(554, "5.5.0", "Transaction failed")
# Sender authentication (policy/sender_auth.py), on the MX listener.
DMARC_REJECTED = _r(
    550, "5.7.1", "Message rejected: it failed the DMARC check and the From domain's policy is reject"
)
SPF_REJECTED = _r(550, "5.7.23", "Message rejected: the sender's SPF record does not allow your address")
EHLO_IMPERSONATION = _r(550, "5.7.1", "Your EHLO name is this server's own name or an address not yours")

# --- AUTH (RFC 4954) ----------------------------------------------------------------------------
ENCRYPTION_REQUIRED = _r(530, "5.7.0", "Must issue a STARTTLS command first")
AUTH_MECHANISM_UNKNOWN = _r(504, "5.5.4", "Unrecognized authentication type")
ALREADY_AUTHENTICATED = _r(503, "5.5.1", "Already authenticated")

# --- client side: what the receiving server said or lacks (for delivery outcomes and DSNs) --------
REMOTE_REPLY_MALFORMED = _r(451, "4.5.0", "The receiving server sent a reply that could not be understood")
REMOTE_CLOSED = _r(451, "4.4.2", "The receiving server closed the connection")
REMOTE_MESSAGE_TOO_BIG = _r(552, "5.3.4", "Message size exceeds the receiving server's fixed maximum")
REMOTE_NO_SMTPUTF8 = _r(
    553, "5.6.7", "The receiving server does not accept internationalized mail (SMTPUTF8)"
)
REMOTE_NO_8BITMIME = _r(554, "5.6.3", "The receiving server does not accept 8-bit message bodies")
REMOTE_NO_BINARYMIME = _r(554, "5.6.3", "The receiving server does not accept binary message bodies")
