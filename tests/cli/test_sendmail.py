"""The real `postroom-sendmail` script with the message on stdin: against a running `postroom serve`, with
the server down (then started, and the mail found in a Maildir), -t -i -f -F -bs -bp, legacy flags, errors."""

from __future__ import annotations

import email
import email.policy
import subprocess
import sys
from email.message import EmailMessage
from pathlib import Path

import pytest

from postroom.app import open_accounts
from postroom.cli.errors import EX_NOUSER, EX_TEMPFAIL, EX_USAGE
from postroom.cli.sendmail import parse_arguments
from postroom.cli.sendmail_message import Message
from postroom.config import Config
from tests.helpers.server import maildir_messages, serve_process, server_thread, wait_for, write_config

SCRIPT = Path(sys.executable).with_name("postroom-sendmail")


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Config, Path]:
    config, config_file = write_config(tmp_path)
    accounts, db = open_accounts(config)
    try:
        for name in ("alice", "bob", "carol"):
            accounts.add_mailbox(f"{name}@postroom.test")
    finally:
        db.close()
    return config, config_file


def sendmail(config_file: Path, *args: str, message: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [str(SCRIPT), "-C", str(config_file), *args],
        input=message,
        capture_output=True,
        timeout=60,
        check=False,
    )


def delivered(config: Config, address: str, count: int = 1) -> list[EmailMessage]:
    """Starts the server, waits for ``count`` messages in ``address``'s Maildir, parses them."""
    with server_thread(config):
        paths = wait_for(
            lambda: len(found := maildir_messages(config, address)) >= count and found, what="delivery"
        )
    return [email.message_from_bytes(path.read_bytes(), policy=email.policy.default) for path in paths]


def one_line(result: subprocess.CompletedProcess[bytes]) -> str:
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# --- with the server down: straight into the queue ------------------------------------------------------


def test_server_down_queues_and_the_server_delivers_when_it_starts(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    result = sendmail(
        config_file, "-f", "cron@postroom.test", "-F", "Cron Daemon", "alice",
        message=b"Subject: nightly\n\nAll is well.\n",
    )  # fmt: skip
    assert (result.returncode, result.stderr) == (0, b"")
    [mail] = delivered(config, "alice@postroom.test")
    assert mail["Subject"] == "nightly"
    assert mail["From"] == "Cron Daemon <cron@postroom.test>"
    assert mail["Date"] is not None
    assert mail["Message-ID"].endswith("@mx.postroom.test>")
    assert "postroom sendmail" in mail["Received"]
    assert mail["Return-Path"] in (None, "<cron@postroom.test>")
    assert mail.get_content() == "All is well.\n"


def test_t_takes_recipients_from_to_cc_bcc_and_removes_bcc(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    message = b"To: Alice <alice@postroom.test>\nCc: bob@postroom.test\nBcc: carol@postroom.test\n\nHi\n"
    result = sendmail(config_file, "-t", message=message)
    assert result.returncode == 0, result.stderr
    with server_thread(config):
        for name in ("alice", "bob", "carol"):
            wait_for(lambda name=name: maildir_messages(config, f"{name}@postroom.test"), what=name)
    for name in ("alice", "bob", "carol"):
        [path] = maildir_messages(config, f"{name}@postroom.test")
        data = path.read_bytes()
        assert b"\nBcc:" not in data
        assert b"\nTo: Alice <alice@postroom.test>\n" in data  # Maildir keeps LF line ends


def test_a_lone_dot_ends_input_unless_i_or_oi(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    body = b"Subject: dots\n\nbefore\n.\nafter\n"
    for flags in ((), ("-i",), ("-oi",)):
        assert sendmail(config_file, *flags, "alice@postroom.test", message=body).returncode == 0
    mails = delivered(config, "alice@postroom.test", count=3)
    contents = sorted(mail.get_content() for mail in mails)
    assert contents == ["before\n", "before\n.\nafter\n", "before\n.\nafter\n"]


def test_legacy_flags_are_accepted_and_ignored(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    flags = ("-odi", "-oem", "-oQ/var/spool/mqueue", "-v", "-bm", "-U", "-oi", "-N", "never", "-q", "-ti")
    result = sendmail(config_file, *flags, message=b"To: bob@postroom.test\nSubject: legacy\n\nok\n")
    assert (result.returncode, result.stderr) == (0, b"")
    [mail] = delivered(config, "bob@postroom.test")
    assert mail["Subject"] == "legacy"


def test_bp_lists_the_queue(setup: tuple[Config, Path]) -> None:
    _, config_file = setup
    assert sendmail(config_file, "-bp").stdout == b"Mail queue is empty\n"
    sendmail(config_file, "-f", "cron@postroom.test", "carol", message=b"Subject: q\n\nx\n")
    listing = sendmail(config_file, "-bp")
    assert listing.returncode == 0
    assert b"cron@postroom.test" in listing.stdout
    assert b"carol@postroom.test" in listing.stdout


def test_bs_speaks_smtp_on_stdin_and_stdout(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    transcript = (
        b"EHLO cron.local\r\n"
        b"MAIL FROM:<cron@postroom.test>\r\n"
        b"RCPT TO:<nobody@postroom.test>\r\n"
        b"RCPT TO:<alice@postroom.test>\r\n"
        b"DATA\r\n"
        b"Subject: over stdio\r\n\r\n..dot-stuffed line\r\n.\r\n"
        b"QUIT\r\n"
    )
    result = sendmail(config_file, "-bs", message=transcript)
    assert result.returncode == 0, result.stderr
    codes = [line[:3] for line in result.stdout.decode().splitlines() if line[3:4] == " "]
    assert codes == ["220", "250", "250", "550", "250", "354", "250", "221"]
    assert b"550 5.1.1 " in result.stdout
    assert b"250 2.0.0 Ok: queued as " in result.stdout
    [mail] = delivered(config, "alice@postroom.test")
    assert mail.get_content() == ".dot-stuffed line\n"
    assert mail["Message-ID"] is not None


# --- with the server running: over SMTP on loopback --------------------------------------------------------


def test_running_server_gets_the_mail_over_smtp(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    with serve_process(config_file) as server:
        result = sendmail(config_file, "alice@postroom.test", message=b"Subject: live\n\nnow\n")
        assert (result.returncode, result.stderr) == (0, b"")
        [path] = wait_for(lambda: maildir_messages(config, "alice@postroom.test"), what="delivery")
        # Remote recipients: loopback is not in relay_networks, so the queue path takes them (trusted user).
        remote = sendmail(config_file, "someone@remote.test", message=b"Subject: out\n\nx\n")
        assert (remote.returncode, remote.stderr) == (0, b"")
        listing = sendmail(config_file, "-bp")
        server.terminate()
    mail = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert "with ESMTP" in mail["Received"]  # the server's own trace line: it came in over SMTP
    assert "[127.0.0.1]" in mail["Received"]
    assert b"someone@remote.test" in listing.stdout


# --- errors: one line and a sysexits.h status ----------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        ((), EX_USAGE, "no recipients"),
        (("-t",), EX_USAGE, "no recipients in the To, Cc or Bcc headers"),
        (("nobody@postroom.test",), EX_NOUSER, "no such user"),
        (("bad@@address",), EX_USAGE, "bad recipient address"),
        (("-bd",), EX_USAGE, "-bd is not supported"),
        (("-f",), EX_USAGE, "-f needs a value"),
    ],
)
def test_bad_input_is_one_line_and_a_sysexits_status(
    setup: tuple[Config, Path], args: tuple[str, ...], status: int, says: str
) -> None:
    _, config_file = setup
    result = sendmail(config_file, *args, message=b"Subject: x\n\nx\n")
    assert result.returncode == status
    assert says in one_line(result)


def test_no_way_to_queue_is_tempfail_75(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    _, config_file = write_config(tmp_path, data_dir=str(blocker / "data"))
    result = sendmail(config_file, "postmaster@postroom.test", message=b"Subject: x\n\nx\n")
    assert result.returncode == EX_TEMPFAIL
    line = one_line(result)
    assert "message not sent" in line
    assert "server is not running" in line


def test_postroom_sendmail_subcommand_takes_the_same_flags(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    result = subprocess.run(
        [sys.executable, "-m", "postroom.cli.main", "-c", str(config_file), "sendmail", "-oi", "-t"],
        input=b"To: bob@postroom.test\nSubject: sub\n\nx\n",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, b"")
    [mail] = delivered(config, "bob@postroom.test")
    assert mail["Subject"] == "sub"


# --- the pure parts ----------------------------------------------------------------------------------------


def test_parse_arguments_reads_clustered_and_attached_flags() -> None:
    options = parse_arguments(["-ti", "-fme@x.test", "-F", "Me", "-oem", "-Cfile.toml", "a@x.test", "-b"])
    assert (options.extract, options.dot_ends) == (True, False)
    assert (options.sender, options.full_name) == ("me@x.test", "Me")
    assert options.config == Path("file.toml")
    assert options.recipients == ["a@x.test", "-b"]  # after the first recipient, all are recipients


def test_message_keeps_folded_fields_and_adds_missing_ones() -> None:
    message = Message.parse(b"To: a@x.test,\r\n b@x.test\r\nBcc: c@x.test\r\n\r\nbody\r\n")
    assert message.recipients() == ["a@x.test", "b@x.test", "c@x.test"]
    message.remove("bcc")
    message.complete(sender="me@x.test", full_name="", hostname="h.test", unique="1", now=0)
    data = message.to_bytes()
    assert data.startswith(b"To: a@x.test,\r\n b@x.test\r\nFrom: me@x.test\r\nDate: ")
    assert data.endswith(b"Message-ID: <1@h.test>\r\n\r\nbody\r\n")
