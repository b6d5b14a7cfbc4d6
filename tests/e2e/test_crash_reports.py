"""kill -9 after a delivery failed for good but before its bounce was queued, restart: the sender still gets
exactly one report (RFC 5321 6.1), because the report waited in the queue's outbox.

The window between "recipient failed" and "bounce queued" is made deterministic without any hook in the
server: the message itself is small enough to live in the index (no spool file), the bounce is bigger than
``[queue] inline_max`` so it needs one, and the spool folder is a plain file while the first server runs
(ENOTDIR: refused even for root). The server records the failure, cannot queue the bounce, logs
``delivery.bounce_failed``; the test kills it there, puts the folder back and starts a second server.
"""

from __future__ import annotations

import email
import email.message
import email.policy
import json
import smtplib
import sqlite3
from pathlib import Path
from typing import Any

from postroom.config import Config
from tests.e2e.conftest import add_accounts
from tests.e2e.test_relay import _report
from tests.helpers.dns import DnsServer
from tests.helpers.server import maildir_messages, serve_process, wait_for, write_config

SENDER = "alice@postroom.test"
INLINE_MAX = 4000
# ~3.3 KB of header: the message stays under INLINE_MAX (inline), its bounce (headers + report) goes over
FILLER = "".join(f"X-Filler-{n}: {'padding ' * 8}\r\n" for n in range(40))
MESSAGE = f"From: <{SENDER}>\r\nSubject: lost in a crash?\r\n{FILLER}\r\nHello.\r\n".encode()


def _events(config: Config) -> list[dict[str, Any]]:
    if not config.log_file.exists():
        return []
    return [json.loads(line) for line in config.log_file.read_text().splitlines() if line.startswith("{")]


def _named(config: Config, name: str) -> list[dict[str, Any]]:
    return [event for event in _events(config) if event.get("event") == name]


def _pending_reports(config: Config) -> int:
    with sqlite3.connect(f"{config.database_path.resolve().as_uri()}?mode=ro", uri=True) as conn:
        return int(conn.execute("SELECT count(*) FROM reports").fetchone()[0])


def test_kill_9_between_failure_and_bounce_still_brings_one_report(
    tmp_path: Path, dns_server: DnsServer
) -> None:
    dns_server.add("nomail.test", "MX", "0 .")  # null MX (RFC 7505): a permanent failure at once
    config, config_file = write_config(
        tmp_path,
        smtp={"relay_networks": ["127.0.0.0/8"]},
        dns={"nameservers": [dns_server.address], "timeout": 2},
        queue={"inline_max": INLINE_MAX},
    )
    add_accounts(config)
    assert len(MESSAGE) < INLINE_MAX - 600  # room for the Received header we add
    spool = config.queue_dir / "spool"
    aside = spool.with_name("spool.aside")
    with serve_process(config_file) as first:
        spool.rename(aside)
        spool.write_bytes(b"")  # no spool file can be committed from now on
        with smtplib.SMTP(*first.address, timeout=10) as client:
            client.sendmail(SENDER, ["x@nomail.test"], MESSAGE)
        (failed,) = wait_for(lambda: _named(config, "delivery.bounce_failed"), what="the refused bounce")
        first.kill()  # SIGKILL: no shutdown code runs
    assert _named(config, "delivery.failed")
    assert not _named(config, "delivery.bounced")
    assert _pending_reports(config) == 1  # the failure and its report, committed together
    spool.unlink()
    aside.rename(spool)
    with serve_process(config_file) as second:
        wait_for(lambda: maildir_messages(config, SENDER), what="the report after the restart")
        wait_for(lambda: _pending_reports(config) == 0, what="the outbox to empty")
        assert second.terminate() == 0
    (path,) = maildir_messages(config, SENDER)  # exactly one
    (bounced,) = _named(config, "delivery.bounced")
    assert _named(config, "delivery.reports_retried")  # the second server found it in the outbox
    assert bounced["queue_id"] == failed["queue_id"]
    report = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
    assert isinstance(report, email.message.EmailMessage)
    assert report["Subject"] == "Undelivered Mail Returned to Sender"
    _fields, (recipient,), headers = _report(report)
    assert (recipient["Final-Recipient"], recipient["Action"]) == ("rfc822; x@nomail.test", "failed")
    assert "Subject: lost in a crash?" in headers
