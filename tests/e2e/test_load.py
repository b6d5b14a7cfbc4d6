"""Size and concurrency: a 50 MB message in bounded memory, and 200 sessions at once."""

from __future__ import annotations

import smtplib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from postroom.config import Config
from tests.e2e.conftest import add_accounts
from tests.helpers.server import ServerThread, maildir_messages, serve_process, wait_for, write_config
from tests.helpers.transcript import Transcript


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_50_mb_message_streams_through_in_bounded_memory(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, smtp={"max_message_size": 60_000_000})
    add_accounts(config)
    line = b"z" * 76 + b"\r\n"
    block = line * 13_000  # ~1 MB
    with serve_process(config_file) as served:
        baseline = _peak_rss_kib(served.process.pid)
        with Transcript(served.address, timeout=60) as t:
            t.expect("220 *")
            t.send("EHLO c")
            t.expect("250 *")
            t.send("MAIL FROM:<big@example.test> SIZE=52000000")
            t.expect("250 *")
            t.send("RCPT TO:<alice@postroom.test>")
            t.expect("250 *")
            t.send("DATA")
            t.expect("354 *")
            t.send_raw(b"Subject: big\r\n\r\n")
            for _ in range(50):
                t.send_raw(block)
            t.send_raw(b".\r\n")
            t.expect("250 2.0.0 Ok: queued as *")
        (path,) = wait_for(
            lambda: maildir_messages(config, "alice@postroom.test"), timeout=60, what="delivery"
        )
        grown_mib = (_peak_rss_kib(served.process.pid) - baseline) / 1024
        assert served.terminate() == 0
    with path.open("rb") as stored:
        head = stored.read(4096)
        body_start = head.index(b"\n\n") + 2
    assert path.stat().st_size == body_start + 50 * 13_000 * 77  # every line kept, CRLF stored as LF
    assert grown_mib < 25, f"the server grew by {grown_mib:.1f} MiB for a 50 MB message"


@pytest.mark.parametrize("config_overrides", [{"smtp": {"max_connections_per_ip": 250}}])
def test_200_parallel_sessions_all_delivered(server: ServerThread, config: Config) -> None:
    host, port = server.address

    def send(index: int) -> str:
        with smtplib.SMTP(host, port, timeout=30) as client:
            client.ehlo(f"client{index}")
            client.mail(f"s{index}@example.test")
            client.rcpt("bob@postroom.test")
            code, text = client.data(f"Subject: parallel {index}\r\n\r\nbody {index}\r\n".encode())
            assert code == 250
            return text.decode().rsplit(" ", 1)[-1]

    with ThreadPoolExecutor(max_workers=200) as pool:
        ids = list(pool.map(send, range(200)))
    assert len(set(ids)) == 200
    wait_for(
        lambda: len(maildir_messages(config, "bob@postroom.test")) == 200, timeout=60, what="200 deliveries"
    )
    # outcomes are recorded in batches after the Maildir holds the files: the queue empties soon after
    wait_for(
        lambda: server.call(lambda: server.app.queue.message_count() if server.app else -1) == 0,
        timeout=30,
        what="an empty queue",
    )


def test_port_is_really_bound_on_loopback(server: ServerThread) -> None:
    host, port = server.address
    assert host == "127.0.0.1"
    assert port > 0
    with Transcript((host, port)) as t:  # a whole conversation: greeting, QUIT, closed by the server
        t.expect("220 *")
        t.send("QUIT")
        t.expect("221 *")
        t.expect_closed()
