"""SIGHUP / `postroom reload` takes [queue] and [delivery] settings live: a new retry schedule for the next
deferral, require_tls for the next delivery, the scheduler's concurrency and poll interval at once; keys
that need a restart ([delivery] smtp_port) are still reported as such."""

from __future__ import annotations

import asyncio
import io
import json
import smtplib
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.app import running_app
from postroom.config import Config
from postroom.observe.log import Logger
from tests.e2e.conftest import add_accounts
from tests.e2e.test_relay import ScriptedSmtp
from tests.helpers.dns import DnsServer
from tests.helpers.fakes import Records
from tests.helpers.server import maildir_messages, make_config, serve_process, wait_for, write_config

MESSAGE = b"From: <alice@postroom.test>\r\nSubject: %s\r\n\r\nHello.\r\n"


@pytest.fixture
def plain_mx() -> Iterator[ScriptedSmtp]:
    """An MX on 127.0.0.5 that takes every message and offers no STARTTLS."""
    server = ScriptedSmtp("127.0.0.5", [])
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _events(config: Config, name: str) -> list[dict[str, Any]]:
    if not config.log_file.exists():
        return []
    lines = [json.loads(line) for line in config.log_file.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == name]


def _postroom(config_file: Path, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), *args],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


def _sections(dns_server: DnsServer, port: int, **delivery: Any) -> dict[str, Any]:
    return {
        "smtp": {"relay_networks": ["127.0.0.0/8"]},
        "dns": {"nameservers": [dns_server.address], "timeout": 2},
        "delivery": {"smtp_port": port, "connect_timeout": 5, "command_timeout": 10, **delivery},
    }


def _send(address: tuple[str, int], subject: bytes) -> None:
    with smtplib.SMTP(*address, timeout=10) as client:
        client.sendmail("alice@postroom.test", ["carol@scripted.test"], MESSAGE % subject)


def test_require_tls_and_a_new_retry_schedule_apply_to_the_next_delivery(
    tmp_path: Path, dns_server: DnsServer, plain_mx: ScriptedSmtp
) -> None:
    dns_server.add("scripted.test", "MX", "5 mx.scripted.test.").add("mx.scripted.test", "A", "127.0.0.5")
    config, config_file = write_config(
        tmp_path, queue={"retry_schedule": [600]}, **_sections(dns_server, plain_mx.port)
    )
    with serve_process(config_file) as served:
        _send(served.address, b"in clear")
        wait_for(lambda: plain_mx.bodies, what="delivery without TLS")

        write_config(
            tmp_path,
            queue={"retry_schedule": [7200]},
            **_sections(dns_server, plain_mx.port, require_tls=["scripted.test"]),
        )
        _postroom(config_file, "reload")
        reloaded = wait_for(lambda: _events(config, "config.reloaded"), what="the reload")[0]
        assert reloaded["changed"] == "queue.retry_schedule,delivery.require_tls"
        assert not _events(config, "config.restart_needed")

        sent_at = time.time()
        _send(served.address, b"needs TLS now")
        deferred = wait_for(lambda: _events(config, "delivery.deferred"), what="the deferral")[0]
        assert "TLS is required" in json.dumps(deferred)
        assert len(plain_mx.bodies) == 1  # the second message was not sent in clear

        listed = [json.loads(line) for line in _postroom(config_file, "queue", "list", "--json").splitlines()]
        [recipient] = listed[0]["recipients"]
        assert recipient["attempts"] == 1
        # The new schedule's first interval (7200 s), not the old one (600 s), from the moment of the attempt.
        assert recipient["next_attempt_at"] >= int(sent_at) + 7200 - 1
        assert served.process.poll() is None
        assert served.terminate() == 0


async def test_scheduler_settings_change_at_once_and_smtp_port_waits(
    tmp_path: Path, records: Records
) -> None:
    """In-process (App.reload is what SIGHUP calls): concurrency and poll interval are taken, local delivery
    goes on with the new pool of workers; the MX port is a restart key."""
    before = make_config(tmp_path, delivery={"concurrency": 1, "poll_interval": 30})
    after = make_config(tmp_path, delivery={"concurrency": 3, "poll_interval": 0.2, "smtp_port": 2500})
    add_accounts(before)
    current = [before]
    log = Logger(stream=io.StringIO(), level="info")
    log.add_listener(records.append)
    async with running_app(before, log=log, config_loader=lambda: current[0]) as app:
        current[0] = after
        app.reload()
        [reloaded] = records.events("config.reloaded")
        assert reloaded["changed"] == "delivery.concurrency,delivery.poll_interval"
        assert records.events("config.restart_needed")[0]["keys"] == "delivery.smtp_port"
        assert app.config.delivery.concurrency == 3
        assert app.config.delivery.smtp_port == before.delivery.smtp_port

        def send() -> None:
            with smtplib.SMTP(*app.smtp_address, timeout=10) as client:
                for n in range(3):
                    client.sendmail("a@remote.test", ["bob@postroom.test"], MESSAGE % b"%d" % n)

        await asyncio.to_thread(send)
        await asyncio.to_thread(
            lambda: wait_for(
                lambda: len(maildir_messages(before, "bob@postroom.test")) == 3, what="three deliveries"
            )
        )
