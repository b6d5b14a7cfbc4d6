"""kill -9 in the middle of a load, restart, and count: nothing acknowledged with 250 is lost."""

from __future__ import annotations

import re
import smtplib
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.e2e.conftest import add_accounts
from tests.helpers.server import maildir_messages, serve_process, wait_for, write_config

MESSAGES = 1000
SENDERS = 8
KILL_AFTER = 300


class Load:
    """Senders that work through message numbers, retrying a message until it is acknowledged."""

    def __init__(self) -> None:
        self.address: tuple[str, int] | None = None
        self.lock = threading.Lock()
        self.next_index = 0
        self.acked: dict[int, str] = {}  # message number -> queue id from the 250 reply
        self.deadline = time.monotonic() + 240

    def take(self) -> int | None:
        with self.lock:
            if self.next_index >= MESSAGES:
                return None
            self.next_index += 1
            return self.next_index - 1

    def run(self) -> None:
        index = self.take()
        while index is not None and time.monotonic() < self.deadline:
            address = self.address
            try:
                if address is None:
                    raise ConnectionError("server down")
                with smtplib.SMTP(*address, timeout=10) as client:
                    client.ehlo("load.example")
                    while index is not None:
                        client.mail("load@example.test")
                        client.rcpt("alice@postroom.test")
                        code, text = client.data(f"Subject: load {index}\r\n\r\nnumber {index}\r\n".encode())
                        assert code == 250
                        with self.lock:
                            self.acked[index] = text.decode().rsplit(" ", 1)[-1]
                        index = self.take()
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)  # the server is being killed or restarted: try this message again


def _ids_in_maildir(paths: list[Path]) -> Counter[str]:
    found: Counter[str] = Counter()
    for path in paths:
        match = re.search(rb"\(postroom\) with ESMTP id (\S+)", path.read_bytes()[:2048])
        assert match is not None
        found[match.group(1).decode()] += 1
    return found


@pytest.mark.slow
def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, queue={"claim_lease": 2}, log={"level": "warning"})
    add_accounts(config)
    load = Load()
    threads = [threading.Thread(target=load.run, daemon=True) for _ in range(SENDERS)]
    with serve_process(config_file) as first:
        load.address = first.address
        for thread in threads:
            thread.start()
        wait_for(
            lambda: len(load.acked) >= KILL_AFTER, timeout=120, what=f"{KILL_AFTER} acknowledged messages"
        )
        first.kill()  # SIGKILL: no shutdown code runs
        load.address = None
        acked_before_kill = dict(load.acked)
    with serve_process(config_file) as second:
        load.address = second.address
        for thread in threads:
            thread.join(240)
        assert len(load.acked) == MESSAGES
        expected = set(load.acked.values())
        wait_for(
            lambda: expected <= set(_ids_in_maildir(maildir_messages(config, "alice@postroom.test"))),
            timeout=120,
            interval=0.5,
            what="every acknowledged message in the Maildir",
        )
        assert second.terminate() == 0
    delivered = _ids_in_maildir(maildir_messages(config, "alice@postroom.test"))
    assert all(delivered[queue_id] in (1, 2) for queue_id in expected), "an acknowledged message was lost"
    assert set(acked_before_kill.values()) <= set(delivered)
    # Every message that reached the Maildir was acknowledged, or was in flight at the kill (its 250 lost).
    assert len(set(delivered) - expected) <= SENDERS
