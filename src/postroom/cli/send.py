"""`postroom send`: submit a message like a mail client would (submission, STARTTLS or implicit TLS, AUTH).

For humans and scripts: the body from --body or standard input, attachments with --attach; every failure
(unreachable server, TLS, refused login or address) is one line and a sysexits.h status.
"""

from __future__ import annotations

import argparse
import mimetypes
import os
import smtplib
import ssl
import sys
from email.message import EmailMessage
from email.utils import formataddr
from pathlib import Path
from typing import Any

from postroom.cli.errors import (
    EX_NOPERM,
    EX_NOUSER,
    EX_PROTOCOL,
    EX_TEMPFAIL,
    EX_UNAVAILABLE,
    EX_USAGE,
    CliError,
)
from postroom.config import Config

__all__ = ["build_message", "register"]


def register(commands: Any) -> None:
    parser = commands.add_parser("send", help="submit a message through a submission port")
    parser.add_argument("--to", action="append", required=True, help="recipient (repeatable)")
    parser.add_argument("--cc", action="append", default=[], help="copy recipient (repeatable)")
    parser.add_argument("--from", dest="sender", required=True, help="your address (also the login)")
    parser.add_argument("--name", default="", help="your display name")
    parser.add_argument("--subject", default="")
    parser.add_argument("--body", help="the text (default: read standard input)")
    parser.add_argument("--attach", action="append", type=Path, default=[], help="a file (repeatable)")
    parser.add_argument("--server", help="host:port (default: the first [submission] listen address)")
    parser.add_argument("--tls", choices=("starttls", "implicit", "none"), default="starttls")
    parser.add_argument("--user", help="login name (default: --from)")
    parser.add_argument("--password-stdin", action="store_true", help="read the password's line from stdin")
    parser.add_argument("--cafile", type=Path, help="trust this CA (default: system CAs + our own cert)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    password = _password(args)
    body = args.body if args.body is not None else sys.stdin.read()
    message = build_message(
        sender=args.sender, name=args.name, to=args.to, cc=args.cc, subject=args.subject, body=body,
        attachments=args.attach,
    )  # fmt: skip
    host, port = _server(args, config)
    context = _tls_context(args.cafile, config)
    recipients = [*args.to, *args.cc]
    try:
        queue_id = _submit(
            server=(host, port),
            tls=args.tls,
            context=context,
            login=(args.user or args.sender, password),
            message=message,
            recipients=recipients,
        )
    except smtplib.SMTPAuthenticationError as exc:
        raise CliError(f"login refused by the server: {_reply(exc)}", EX_NOPERM) from None
    except smtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(
            f"{rcpt}: {code} {text.decode(errors='replace')}" for rcpt, (code, text) in exc.recipients.items()
        )
        raise CliError(f"recipients refused: {refused}", EX_NOUSER) from None
    except smtplib.SMTPResponseException as exc:
        status = EX_TEMPFAIL if 400 <= exc.smtp_code < 500 else EX_UNAVAILABLE
        raise CliError(f"the server refused the message: {_reply(exc)}", status) from None
    except ssl.SSLError as exc:
        raise CliError(f"TLS with {host}:{port} failed: {exc.reason or exc}", EX_PROTOCOL) from None
    except (OSError, smtplib.SMTPException) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise CliError(f"cannot reach {host}:{port}: {reason}", EX_UNAVAILABLE) from None
    print(f"sent: {queue_id}" if queue_id else "sent")
    return 0


def build_message(
    *, sender: str, name: str, to: list[str], cc: list[str], subject: str, body: str, attachments: list[Path]
) -> EmailMessage:
    """A MIME message: text/plain, plus one part per attachment (type guessed from the file name)."""
    message = EmailMessage()
    message["From"] = formataddr((name, sender)) if name else sender
    message["To"] = ", ".join(to)
    if cc:
        message["Cc"] = ", ".join(cc)
    message["Subject"] = subject
    message.set_content(body)
    for path in attachments:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read attachment {path}: {exc.strerror}", EX_USAGE) from None
        kind, _ = mimetypes.guess_type(path.name)
        maintype, _, subtype = (kind or "application/octet-stream").partition("/")
        message.add_attachment(data, maintype=maintype, subtype=subtype, filename=path.name)
    return message


def _submit(
    *,
    server: tuple[str, int],
    tls: str,
    context: ssl.SSLContext,
    login: tuple[str, str | None],
    message: EmailMessage,
    recipients: list[str],
) -> str:
    """The transaction; returns the queue id from the server's 250 to the message."""
    host, port = server
    client = (
        smtplib.SMTP_SSL(host, port, timeout=30, context=context)
        if tls == "implicit"
        else smtplib.SMTP(host, port, timeout=30)
    )
    with client:
        client.ehlo()
        if tls == "starttls":
            client.starttls(context=context)
            client.ehlo()
        user, password = login
        if password is not None:
            client.login(user, password)
        sender = str(message["From"].addresses[0].addr_spec)
        code, text = client.mail(sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, sender)
        refused = {}
        for rcpt in recipients:
            code, text = client.rcpt(rcpt)
            if code not in (250, 251):
                refused[rcpt] = (code, text)
        if len(refused) == len(recipients):
            raise smtplib.SMTPRecipientsRefused(refused)
        code, text = client.data(message.as_bytes(policy=message.policy.clone(linesep="\r\n")))
        if code != 250:
            raise smtplib.SMTPDataError(code, text)
    reply = text.decode(errors="replace")
    return reply.rsplit(" ", 1)[-1] if "queued as" in reply else ""


def _password(args: argparse.Namespace) -> str | None:
    if args.password_stdin:
        if args.body is None:
            raise CliError(
                "--password-stdin needs the text in --body (standard input holds the password)", EX_USAGE
            )
        return sys.stdin.readline().rstrip("\r\n") or None
    return os.environ.get("POSTROOM_PASSWORD") or None


def _server(args: argparse.Namespace, config: Config) -> tuple[str, int]:
    if args.server:
        host, _, port = args.server.rpartition(":")
        if not host or not port.isdigit():
            raise CliError(f"--server must be host:port, not {args.server!r}", EX_USAGE)
        return host.strip("[]"), int(port)
    listen = config.submissions.listen if args.tls == "implicit" else config.submission.listen
    if not listen:
        raise CliError("no submission address configured; give --server host:port", EX_USAGE)
    return listen[0].host, listen[0].port


def _tls_context(cafile: Path | None, config: Config) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cafile) if cafile else None)
    own = config.tls.cert_file or config.data_dir / "tls" / "cert.pem"
    if cafile is None and own.exists():
        context.load_verify_locations(cafile=str(own))  # our own (maybe self-signed) certificate
    return context


def _reply(exc: smtplib.SMTPResponseException) -> str:
    text = (
        exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    )
    return f"{exc.smtp_code} {text}"
