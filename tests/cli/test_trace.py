"""`postroom trace`: a real `postroom serve` writes its JSON log file; a message sent with smtplib is traced
by queue id and by address, from the connection to its removal from the queue."""

from __future__ import annotations

import json
import re
import smtplib
import subprocess
import sys
from pathlib import Path

from tests.helpers.server import maildir_messages, serve_process, wait_for, write_config


def postroom(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_trace_by_id_and_by_address(tmp_path: Path) -> None:
    config, path = write_config(tmp_path)
    with serve_process(path) as server:
        with smtplib.SMTP(*server.address, timeout=10) as client:
            client.ehlo("client.test")
            client.mail("alice@example.test")
            assert client.rcpt("postmaster@postroom.test")[0] == 250
            assert client.rcpt("nobody@postroom.test")[0] == 550
            code, reply = client.data(b"Subject: traced\r\n\r\nhello\r\n")
        assert code == 250
        match = re.search(rb"queued as ([0-9a-f]{16})", reply)
        assert match is not None
        queue_id = match.group(1).decode()
        wait_for(lambda: maildir_messages(config, "postmaster@postroom.test"), what="local delivery")
        wait_for(lambda: "message.removed" in config.log_file.read_text(), what="the removed line")
        wait_for(lambda: "session.close" in config.log_file.read_text(), what="the session's end")

        by_id = postroom(path, "trace", queue_id)
        assert by_id.returncode == 0, by_id.stderr
        text = by_id.stdout
        assert text.startswith(f"Message {queue_id}\n")
        for expected in (
            "connect from 127.0.0.1 on smtp",
            "RCPT <postmaster@postroom.test> accepted: 250 2.1.5",
            "RCPT nobody@postroom.test refused: 550 5.1.1",
            "queued from <alice@example.test>: 1 recipient(s)",
            "delivered to <postmaster@postroom.test> (attempt 1)",
            "removed from the queue",
            "now: not in the queue (delivered, bounced or deleted)",
        ):
            assert expected in text, text
        order = [text.index(part) for part in ("connect from", "queued from", "delivered to", "removed")]
        assert order == sorted(order)

        by_address = postroom(path, "trace", "alice@example.test", "--json")
        assert by_address.returncode == 0, by_address.stderr
        report = json.loads(by_address.stdout)
        (message,) = report["messages"]
        assert message["queue_id"] == queue_id
        assert message["in_queue"] is False
        events = [record["event"] for record in message["events"]]
        assert events[0] == "session.connect"
        assert "session.close" in events
        assert {"message.queued", "delivery.delivered", "message.removed"} <= set(events)

        refused = postroom(path, "trace", "nobody@postroom.test", "--json")
        assert [r["reply"][:3] for r in json.loads(refused.stdout)["refused"]] == ["550"]

        unknown = postroom(path, "trace", "0006123456789abc")
        assert unknown.returncode != 0
        assert "nothing about 0006123456789abc" in unknown.stderr
        assert server.terminate() == 0
    lines = config.log_file.read_text().splitlines()
    assert all(json.loads(line)["event"] for line in lines)  # the file is JSON lines, whatever stderr is
