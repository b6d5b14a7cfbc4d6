"""The front door on a real server: deny and allow lists (reloaded), DNSBL/DNSWL at connect and at RCPT,
the greet delay, and a flood of connections from one address while another is served."""

from __future__ import annotations

import signal
import smtplib
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from postroom.smtp import replies
from tests.e2e.conftest import add_accounts
from tests.helpers.dns import DnsServer
from tests.helpers.server import (
    ServerThread,
    make_config,
    serve_process,
    server_thread,
    wait_for,
    write_config,
)
from tests.helpers.transcript import Transcript

MESSAGE = b"From: a@client.test\r\nTo: alice@postroom.test\r\nSubject: hi\r\n\r\nhello\r\n"


@contextmanager
def _server(tmp_path: Path, **sections: Any) -> Iterator[ServerThread]:
    config = make_config(tmp_path, **sections)
    add_accounts(config)
    with server_thread(config) as running:
        yield running


def _send_mail(address: tuple[str, int], *, source: str = "127.0.0.1") -> None:
    """A whole message from ``source``: the server serves this client normally."""
    with smtplib.SMTP(*address, timeout=10, source_address=(source, 0)) as client:
        client.sendmail("a@client.test", ["alice@postroom.test"], MESSAGE)


def _greeting(address: tuple[str, int], source: str) -> str:
    with Transcript(address, source=source) as t:
        reply = t.read_reply()
        if reply.startswith("5") or reply.startswith("421"):
            t.expect_closed()
        return reply


def test_a_denied_client_gets_554_and_others_are_served(tmp_path: Path) -> None:
    with _server(tmp_path, policy={"deny": ["127.0.0.2/32", "::1"]}) as server:
        reply = _greeting(server.address, "127.0.0.2")
        assert reply == "554 5.7.1 Access denied: connections from [127.0.0.2] are not accepted here"
        _send_mail(server.address)
        assert "deny list" in server.log_text


def test_listener_lists_apply_to_their_listener_only(tmp_path: Path) -> None:
    with _server(tmp_path, policy={"submission": {"deny": ["127.0.0.0/8"]}}) as server:
        assert server.app is not None
        assert _greeting(server.app.address("submission"), "127.0.0.1").startswith("554 5.7.1 ")
        assert _greeting(server.address, "127.0.0.1").startswith("220 ")


def test_deny_file_is_read_again_on_reload(tmp_path: Path) -> None:
    deny_file = tmp_path / "deny.txt"
    deny_file.write_text("127.0.0.3\n")
    with _server(tmp_path, policy={"deny_file": str(deny_file)}) as server:
        assert server.app is not None
        assert _greeting(server.address, "127.0.0.3").startswith("554 5.7.1 ")
        deny_file.write_text("# nobody now\n127.0.0.4\n")
        server.call(server.app.reload)  # what SIGHUP runs
        assert _greeting(server.address, "127.0.0.3").startswith("220 ")
        assert _greeting(server.address, "127.0.0.4").startswith("554 5.7.1 ")
        deny_file.write_text("not an address\n")
        server.call(server.app.reload)
        assert "policy.reload_failed" in server.log_text
        assert _greeting(server.address, "127.0.0.4").startswith("554 5.7.1 ")  # the old lists stay


def _dnsbl_sections(dns_server: DnsServer, **policy: Any) -> dict[str, Any]:
    dns_server.add("2.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add("4.0.0.127.bl.test", "A", "127.0.0.2")
    dns_server.add("4.0.0.127.wl.test", "A", "127.0.10.1")
    return {
        "dns": {"nameservers": [dns_server.address], "timeout": 2},
        "policy": {"dnsbl": ["bl.test"], "dnswl": ["wl.test"], **policy},
    }


def test_dnsbl_listed_client_is_refused_at_connect(tmp_path: Path, dns_server: DnsServer) -> None:
    with _server(tmp_path, **_dnsbl_sections(dns_server, allow=["127.0.0.5"])) as server:
        assert server.app is not None
        reply = _greeting(server.address, "127.0.0.2")
        assert reply == "554 5.7.1 Service unavailable; client [127.0.0.2] blocked using bl.test"
        _send_mail(server.address, source="127.0.0.3")  # not listed
        _send_mail(server.address, source="127.0.0.4")  # on the DNSWL as well: the DNSWL wins
        dns_server.add("5.0.0.127.bl.test", "A", "127.0.0.2")
        _send_mail(server.address, source="127.0.0.5")  # on the allow list: not even asked
        assert not [q for q in dns_server.queries if q.name.startswith("5.0.0.127.")]
        # Submission is not checked against the lists (dnsbl_listeners = ["smtp"]).
        assert _greeting(server.app.address("submission"), "127.0.0.2").startswith("220 ")
        assert "dnsbl.listed" in server.log_text


def test_dnsbl_at_rcpt(tmp_path: Path, dns_server: DnsServer) -> None:
    with (
        _server(tmp_path, **_dnsbl_sections(dns_server, dnsbl_reject="rcpt")) as server,
        Transcript(server.address, source="127.0.0.2") as t,
    ):
        t.expect("220 *")
        t.send("EHLO client.test")
        t.expect("250 *")
        t.send("MAIL FROM:<a@client.test>")
        t.expect("250 2.1.0 *")
        t.send("RCPT TO:<alice@postroom.test>")
        t.expect("554 5.7.1 Service unavailable; client [[]127.0.0.2] blocked using bl.test")
        t.send("QUIT")
        t.expect("221 *")


def test_dnsbl_timeout_lets_the_client_in(tmp_path: Path, dns_server: DnsServer) -> None:
    sections = _dnsbl_sections(dns_server, dnsbl_timeout=0.3)
    dns_server.delay("2.0.0.127.bl.test", 3)
    with _server(tmp_path, **sections) as server:
        _send_mail(server.address, source="127.0.0.2")
        assert "dnsbl.timeout" in server.log_text


def test_talking_before_the_greeting_is_refused(tmp_path: Path) -> None:
    policy = {"allow": ["127.0.0.3"], "smtp": {"greet_delay": 0.5}}
    with _server(tmp_path, policy=policy) as server:
        with Transcript(server.address, source="127.0.0.2") as t:
            t.send("EHLO hasty.test")
            t.expect("554 5.5.1 Protocol error: you sent data before the greeting")
            t.expect_closed()
        with Transcript(server.address, source="127.0.0.3") as t:  # allow-listed: no delay, no test
            t.send("EHLO hasty.test")
            t.expect("220 *")
            t.expect("250 *")
        _send_mail(server.address)  # a patient client (smtplib waits for the banner)
        assert "talked before the greeting" in server.log_text


def _open(address: tuple[str, int], source: str, count: int) -> list[socket.socket]:
    sockets = []
    for _ in range(count):
        sock = socket.create_connection(address, timeout=15, source_address=(source, 0))
        sockets.append(sock)
    return sockets


def _first_line(sock: socket.socket) -> str:
    data = b""
    while b"\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize("greet_delay", [0, 0.5])
def test_a_flood_from_one_address_gets_421_while_another_is_served(
    tmp_path: Path, greet_delay: float
) -> None:
    smtp = {"max_connections_per_ip": 20, "max_connections": 2000}
    with _server(tmp_path, smtp=smtp, policy={"smtp": {"greet_delay": greet_delay}}) as server:
        deadline = time.monotonic() + 120
        flood = _open(server.address, "127.0.0.2", 500)
        try:
            _send_mail(server.address)  # 127.0.0.1 is served in the middle of the flood
            lines = []
            for sock in flood:
                assert time.monotonic() < deadline
                lines.append(_first_line(sock))
        finally:
            for sock in flood:
                sock.close()
        greeted = [line for line in lines if line.startswith("220 ")]
        refused = [line for line in lines if line.startswith("421 ")]
        assert len(greeted) == 20
        assert len(refused) == 480
        assert set(refused) == {str(replies.TOO_MANY_CONNECTIONS_FROM_IP)}
        # Once the flood is gone the address is welcome again.
        wait_for(lambda: "session.close" in server.log_text, what="the flood's sessions to close")
        wait_for(lambda: _greeting(server.address, "127.0.0.2").startswith("220 "), what="a slot")


def test_clients_waiting_for_their_greeting_are_told_421_at_shutdown(tmp_path: Path) -> None:
    config = make_config(tmp_path, policy={"smtp": {"greet_delay": 60}})
    server = ServerThread(config)
    server.start()
    try:
        waiting = Transcript(server.address)
        assert server.app is not None
        listener = server.app.listeners[0]
        wait_for(lambda: server.call(lambda: listener.session_count) == 1, what="the gate to hold it")
    finally:
        started = time.monotonic()
        server.stop()
    with waiting:
        waiting.expect("421 4.3.2 *")
        waiting.expect_closed()
    assert time.monotonic() - started < 30  # the gate did not hold the shutdown for its 60 s


def test_sighup_reloads_the_deny_file(tmp_path: Path) -> None:
    deny_file = tmp_path / "deny.txt"
    deny_file.write_text("127.0.0.6\n")
    _, config_file = write_config(tmp_path, policy={"deny_file": str(deny_file)})
    with serve_process(config_file) as served:
        assert _greeting(served.address, "127.0.0.6").startswith("554 5.7.1 ")
        deny_file.write_text("")
        served.process.send_signal(signal.SIGHUP)
        wait_for(lambda: "policy.reloaded" in "".join(served.output), what="the reload")
        assert _greeting(served.address, "127.0.0.6").startswith("220 ")
        assert served.terminate() == 0
