"""`postroom serve` with ``[queue] commit_process = true``: mail over smtplib lands in Maildir byte for
byte, the server survives its commit process being killed, and SIGTERM leaves no commit process behind."""

from __future__ import annotations

import os
import signal
import smtplib
import time
from pathlib import Path

from postroom.config import Config
from tests.e2e.conftest import add_accounts
from tests.helpers.processes import alive, descendants
from tests.helpers.server import ServeProcess, maildir_messages, serve_process, wait_for, write_config

COMMITTER = "postroom.queue.committer"
LINE = b"a line of the big message, with a dot next:\r\n.. and more text to fill a body\r\n"
BIG = b"Subject: big\r\nFrom: a@example.test\r\n\r\n" + LINE * (100 * 1024 // len(LINE) + 1)  # > 100 KiB
SMALL = b"Subject: small\r\nFrom: a@example.test\r\n\r\n" + (b"x" * 98 + b"\r\n") * 10  # ~1 KiB: inline


def _stored_message(stored: bytes, address: str, sender: str = "a@example.test") -> bytes:
    """What follows our trace headers in a Maildir file (Return-Path, Delivered-To, one Received header,
    as mailbox/maildir.py writes them, with LF line ends); the trace headers are checked on the way."""
    head = f"Return-Path: <{sender}>\nDelivered-To: {address}\nReceived: ".encode()
    assert stored.startswith(head), stored[:200]
    lines = stored[len(head) :].split(b"\n")
    n = 1
    while lines[n][:1] in (b" ", b"\t"):  # the Received header's folded lines
        n += 1
    return b"\n".join(lines[n:])


def _delivered(config: Config, address: str, count: int) -> list[bytes]:
    paths = wait_for(
        lambda: (found := maildir_messages(config, address)) and len(found) >= count and found,
        what=f"{count} message(s) for {address}",
    )
    return [path.read_bytes() for path in paths]


def _committer(served: ServeProcess) -> int:
    (pid,) = wait_for(lambda: descendants(served.process.pid, COMMITTER), what="the commit process")
    return int(pid)


def _send(served: ServeProcess, body: bytes) -> int:
    """One transaction to alice; the reply code at the end of data."""
    with smtplib.SMTP(*served.address, timeout=30) as client:
        client.ehlo("client.example")
        assert client.mail("a@example.test")[0] == 250
        assert client.rcpt("alice@postroom.test")[0] == 250
        code, _ = client.data(body)
        return int(code)


def test_mail_lands_byte_exact_and_sigterm_ends_the_commit_process(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, queue={"commit_process": True})
    add_accounts(config)
    with serve_process(config_file) as served:
        committer = _committer(served)
        with smtplib.SMTP(*served.address, timeout=30) as client:
            assert client.sendmail("a@example.test", ["alice@postroom.test"], BIG) == {}
            assert client.sendmail("a@example.test", ["bob@postroom.test"], SMALL) == {}
            # two mailboxes: the spool file is in wire form, copied into each
            assert client.sendmail("a@example.test", ["bob@postroom.test", "carol@other.test"], BIG) == {}
        (alice,) = _delivered(config, "alice@postroom.test", 1)
        assert _stored_message(alice, "alice@postroom.test") == BIG.replace(b"\r\n", b"\n")
        assert b"\r" not in alice
        bob = _delivered(config, "bob@postroom.test", 2)
        assert sorted(_stored_message(data, "bob@postroom.test") for data in bob) == sorted(
            [BIG.replace(b"\r\n", b"\n"), SMALL.replace(b"\r\n", b"\n")]
        )
        (carol,) = _delivered(config, "carol@other.test", 1)
        assert _stored_message(carol, "carol@other.test") == BIG.replace(b"\r\n", b"\n")
        assert descendants(served.process.pid, COMMITTER) == [committer]  # the same process did all
        spool = config.queue_dir / "spool"
        wait_for(lambda: not any(spool.iterdir()), what="the spool files removed after delivery")
        assert served.terminate() == 0
    assert not alive(committer, COMMITTER)


def test_a_killed_commit_process_is_replaced_and_mail_still_lands(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, queue={"commit_process": True})
    add_accounts(config)
    with serve_process(config_file) as served:
        old = _committer(served)
        os.kill(old, signal.SIGKILL)
        codes = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # 451 while the commit process is restarted; bounded in time
            codes.append(_send(served, BIG))
            if codes[-1] == 250:
                break
            time.sleep(0.1)
        assert codes[-1] == 250
        assert set(codes[:-1]) <= {451}, codes  # a temporary failure, never a lost 250
        (alice,) = _delivered(config, "alice@postroom.test", 1)
        assert _stored_message(alice, "alice@postroom.test") == BIG.replace(b"\r\n", b"\n")
        (new,) = descendants(served.process.pid, COMMITTER)
        assert new != old
        assert served.terminate() == 0
    assert not alive(new, COMMITTER)
    assert "queue.commit_process_lost" in "".join(served.output)
