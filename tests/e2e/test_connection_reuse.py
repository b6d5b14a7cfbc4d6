"""Connection reuse: postroom A (127.0.0.2) carries several messages to postroom B (127.0.0.3) over one
connection (RSET between), bounded by max_messages_per_connection and connection_idle. Connections are
counted in B's own log (A connects from 127.0.0.1: it binds no source address)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_relay import _message, _queue_empty, _remote_config, _sender_config, inject
from tests.helpers.dns import DnsServer
from tests.helpers.server import ServerThread, maildir_messages, server_thread, wait_for


@pytest.fixture
def remote(tmp_path: Path) -> Iterator[ServerThread]:
    with server_thread(_remote_config(tmp_path)) as running:
        yield running


def _connections_from_a(remote: ServerThread) -> int:
    return sum(
        1
        for line in remote.log_text.splitlines()
        if "session.connect " in line and "listener=smtp" in line  # only A talks to B's MX port here
    )


@pytest.mark.parametrize(("per_connection", "connections"), [(100, 1), (2, 3)])
def test_messages_to_one_host_share_connections(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread, per_connection: int, connections: int
) -> None:
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    delivery = {
        "max_connections_per_domain": 1,
        "max_messages_per_connection": per_connection,
        "connection_idle": 30,
    }
    config = _sender_config(tmp_path, dns_server, remote.address[1], delivery=delivery)
    with server_thread(config) as sender:
        for number in range(5):
            inject(sender, "bob@remote.test", body=_message(f"message {number}"))
        wait_for(lambda: len(maildir_messages(remote.config, "bob@remote.test")) == 5, what="five deliveries")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert log.count("delivery.transaction ") == 5
    assert log.count("reused=True") == 5 - connections
    assert _connections_from_a(remote) == connections


def test_an_idle_connection_is_closed_and_the_next_message_opens_a_new_one(
    tmp_path: Path, dns_server: DnsServer, remote: ServerThread
) -> None:
    dns_server.add("remote.test", "MX", "10 mx.remote.test.").add("mx.remote.test", "A", "127.0.0.3")
    config = _sender_config(tmp_path, dns_server, remote.address[1], delivery={"connection_idle": 0.3})
    with server_thread(config) as sender:
        inject(sender, "bob@remote.test", body=_message("first"))
        wait_for(lambda: _queue_empty(sender), what="the first delivery")
        wait_for(lambda: "session.close " in remote.log_text, what="A to close the idle connection")
        time.sleep(0.1)
        inject(sender, "bob@remote.test", body=_message("second"))
        wait_for(lambda: len(maildir_messages(remote.config, "bob@remote.test")) == 2, what="the second")
        wait_for(lambda: _queue_empty(sender), what="A's queue to empty")
        log = sender.log_text
    assert "reused=True" not in log
    assert _connections_from_a(remote) == 2
