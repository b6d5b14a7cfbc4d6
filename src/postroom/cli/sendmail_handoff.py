"""Hands a finished message to postroom for ``sendmail``: over SMTP to the running server's MX listener on
loopback, else straight into the queue through the queue room's own commit path.

Why the queue and not a maildrop folder that the server imports: a commit is one SQLite transaction after
the spool file is fsynced, so the message is either in the queue once or not at all, and the queue already
serves several processes on one data folder (the server's scheduler sees it at its next poll). A maildrop
needs a second move (import, then unlink) where a crash in between delivers twice, or loses the mail if the
order is reversed. So the only two outcomes here are "queued as ID" or a CliError (nothing was queued).

The SMTP path is tried first when the server runs (it also works for a user who may not write to the data
folder). When the server refuses a recipient by policy (5.7.x: loopback is not in relay_networks) or
answers 4xx, or cannot be reached, the message goes into the queue directly: a local user who may write to
the data folder is trusted like Postfix's postdrop group. Unknown local users are refused in both paths.
"""

from __future__ import annotations

import asyncio
import email.utils
import os
import smtplib
import socket
import sqlite3
import sys
from dataclasses import dataclass

from postroom.app import LISTEN_FILE, open_accounts
from postroom.auth.accounts import Accounts
from postroom.cli.errors import EX_DATAERR, EX_NOUSER, EX_TEMPFAIL, EX_USAGE, CliError
from postroom.config import Config
from postroom.observe.log import Logger
from postroom.queue import Envelope, Queue, QueueError, Recipient
from postroom.smtp.types import Address

__all__ = ["Submission", "hand_off", "recipient_refusal", "running_server"]

_SMTP_TIMEOUT = 60.0
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}  # noqa: S104 - mapped to loopback


@dataclass(frozen=True, slots=True)
class Submission:
    """A message ready to go: envelope sender ("" is ``<>``), recipients (each with a domain), the whole
    message in CRLF lines."""

    sender: str
    recipients: tuple[Address, ...]
    data: bytes
    user: str  # the login name that ran sendmail, for the Received line


class _TryQueue(Exception):
    """The SMTP path is not open for this message; the queue path may be."""


def running_server(config: Config) -> tuple[str, int] | None:
    """The running server's MX address from the data folder (postroom.pid and postroom.listen), or None."""
    try:
        pid = int((config.data_dir / "postroom.pid").read_text().strip())
        lines = (config.data_dir / LISTEN_FILE).read_text().splitlines()
    except (OSError, ValueError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # a stale pid file: the server died without cleaning up
    except PermissionError:
        pass  # running as another user: it is alive
    for line in lines:
        name, _, address = line.partition(" ")
        host, _, port = address.rpartition(":")
        if name == "smtp" and port.isdigit():
            return _WILDCARDS.get(host, host), int(port)
    return None


def recipient_refusal(address: Address, accounts: Accounts) -> str | None:
    """Why ``address`` cannot be taken (None when it can): an unknown local user, or an address literal."""
    if address.domain.startswith("["):
        return f"{address}: address literals are not relayed"
    if accounts.is_local_domain(address.domain) and not accounts.resolve(address.local_part, address.domain):
        return f"{address}: no such user here"
    return None


def hand_off(submission: Submission, config: Config) -> str:
    """Queues the message once; returns its queue id. Raises CliError (with a sysexits status) otherwise."""
    server = running_server(config)
    reason = "the server is not running"
    if server is not None:
        try:
            return _over_smtp(submission, server, config)
        except _TryQueue as exc:
            reason = str(exc)
    try:
        return _into_queue(submission, config)
    except (OSError, sqlite3.Error) as exc:
        raise CliError(
            f"message not sent: {reason}, and the queue is not writable ({_why(exc)})", EX_TEMPFAIL
        ) from None


def _over_smtp(submission: Submission, server: tuple[str, int], config: Config) -> str:
    host, port = server
    try:
        client = smtplib.SMTP(host, port, local_hostname="localhost", timeout=_SMTP_TIMEOUT)
    except (OSError, smtplib.SMTPException) as exc:
        raise _TryQueue(f"cannot reach the server at {host}:{port} ({_why(exc)})") from None
    try:
        return _transaction(client, submission)
    except (OSError, smtplib.SMTPException) as exc:
        # Also after the final dot: the server may have queued it, but a second copy beats a lost one.
        raise _TryQueue(f"the SMTP exchange failed ({_why(exc)})") from None
    finally:
        try:
            client.quit()
        except (OSError, smtplib.SMTPException):
            client.close()


def _transaction(client: smtplib.SMTP, submission: Submission) -> str:
    client.ehlo()
    needs_utf8 = any(a.needs_smtputf8 for a in submission.recipients) or not submission.sender.isascii()
    options = ["SMTPUTF8"] if needs_utf8 else []
    if not submission.data.isascii():
        options.append("BODY=8BITMIME")
    code, text = client.mail(submission.sender, options)
    _check(code, text, "sender")
    for address in submission.recipients:
        code, text = client.rcpt(str(address))
        _check(code, text, str(address))
    code, text = client.data(submission.data)
    _check(code, text, "message")
    return text.decode("utf-8", "replace").rsplit(" ", 1)[-1]


def _check(code: int, text: bytes, what: str) -> None:
    reply = f"{code} {text.decode('utf-8', 'replace')}"
    if code < 400:
        return
    if code < 500 or " 5.7." in f" {reply[4:]}":  # temporary, or refused by policy: the queue path decides
        raise _TryQueue(f"the server answered {reply} for {what}")
    status = EX_NOUSER if what not in ("sender", "message") else EX_DATAERR
    raise CliError(f"message not sent: the server refused {what}: {reply}", status)


def _into_queue(submission: Submission, config: Config) -> str:
    accounts, db = open_accounts(config)
    try:
        recipients = _queue_recipients(submission.recipients, accounts)
    finally:
        db.close()
    received = (
        f"Received: by {config.hostname} (postroom sendmail, from user {submission.user});\r\n"
        f"\t{email.utils.formatdate(localtime=True)}\r\n"
    ).encode()
    envelope = Envelope(sender=submission.sender, recipients=recipients, client_ip="", helo="")
    return asyncio.run(_commit(config, envelope, received + submission.data))


def _queue_recipients(addresses: tuple[Address, ...], accounts: Accounts) -> tuple[Recipient, ...]:
    recipients: dict[str, Recipient] = {}  # one copy per mailbox, whatever the aliases
    for address in addresses:
        refusal = recipient_refusal(address, accounts)
        if refusal is not None:
            status = EX_NOUSER if "no such user" in refusal else EX_USAGE
            raise CliError(f"message not sent: {refusal}", status)
        if accounts.is_local_domain(address.domain):
            for mailbox in accounts.resolve(address.local_part, address.domain) or ():
                recipients.setdefault(mailbox, Recipient(address=str(address), mailbox=mailbox))
        else:
            remote = f"{address.local_part}@{address.domain.lower()}"
            recipients.setdefault(remote, Recipient(address=str(address), mailbox=remote, transport="smtp"))
    return tuple(recipients.values())


async def _commit(config: Config, envelope: Envelope, data: bytes) -> str:
    queue = Queue(
        settings=config.queue,
        queue_dir=config.queue_dir,
        database_path=config.database_path,
        log=Logger(stream=sys.stderr, level="warning"),
    )
    await queue.start()
    try:
        writer = queue.open_spool()
        writer.write(data)
        return await queue.commit(writer, envelope)
    finally:
        await queue.stop()


def _why(exc: BaseException) -> str:
    if isinstance(exc, QueueError | sqlite3.Error | socket.timeout):
        return str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.strerror:
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc) or type(exc).__name__
