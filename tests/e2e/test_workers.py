"""`workers = 2`: a supervisor and two `postroom serve` worker processes sharing the listeners and the queue.

Real processes (`postroom serve -c FILE`), real smtplib clients on loopback. What a worker did is read from
the JSON log file they share (every line carries ``worker``); the supervisor's own lines carry none.
"""

from __future__ import annotations

import os
import signal
import smtplib
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.app import worker_count
from tests.e2e.conftest import add_accounts
from tests.helpers.server import (
    maildir_messages,
    make_config,
    serve_process,
    wait_for,
    write_config,
)
from tests.helpers.workers import ALICE, Served, alive, children, delivered_tags, send_parallel

EACH_DELIVERS = {"own_process": False}  # every worker delivers its own mail, no delivery process


@pytest.fixture
def served(tmp_path: Path, config_overrides: dict[str, Any]) -> Iterator[Served]:
    """`postroom serve` with workers = 2, both workers started (their server.started is in the log); each
    delivers its own mail (no delivery process: tests/e2e/test_delivery_process.py has that)."""
    config, config_file = write_config(tmp_path, workers=2, delivery=EACH_DELIVERS, **config_overrides)
    add_accounts(config)
    with serve_process(config_file) as process:
        running = Served(config, config_file, process)
        wait_for(lambda: len(children(running.pid)) == 2, timeout=20, what="two worker processes")
        wait_for(lambda: running.workers_of("server.started") == {0, 1}, timeout=20, what="both workers")
        yield running


def _terminate(served: Served) -> None:
    assert served.process.terminate(timeout=30) == 0


@pytest.mark.slow
def test_two_workers_share_the_sessions_and_deliver_every_message(served: Served) -> None:
    assert len(children(served.pid)) == 2
    sent = send_parallel(served.process.address, sessions=20, per_session=2, prefix="m")
    assert delivered_tags(served.config, 40) == sent
    assert served.workers_of("session.connect") == {0, 1}
    assert served.workers_of("message.queued") == {0, 1}
    for record in served.events("message.queued"):  # worker N's queue ids carry the digit N + 1
        assert record["queue_id"][13] == f"{record['worker'] + 1:x}"
    _terminate(served)
    assert len(maildir_messages(served.config, ALICE)) == 40  # no message delivered twice
    assert served.output.count("postroom is ready.") == 1


@pytest.mark.slow
def test_reload_reaches_both_workers(served: Served, tmp_path: Path) -> None:
    pid_file = served.config.data_dir / "postroom.pid"
    assert int(pid_file.read_text()) == served.pid  # the supervisor: it passes SIGHUP on
    write_config(tmp_path, workers=2, delivery=EACH_DELIVERS, smtp={"max_message_size": 12345})
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(served.config_file), "reload"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    wait_for(lambda: served.workers_of("config.reloaded") == {0, 1}, timeout=20, what="both workers reloaded")
    assert served.events("workers.reload", workers=2)
    for record in served.events("config.reloaded"):
        assert "smtp.max_message_size" in record["changed"]
    for _ in range(6):  # whichever worker the kernel gives a session to, it has the new size
        with smtplib.SMTP(*served.process.address, timeout=30) as client:
            client.ehlo("client.test")
            assert client.esmtp_features["size"] == "12345"
    _terminate(served)


@pytest.mark.slow
@pytest.mark.parametrize("index", [0, 1])
def test_a_killed_worker_is_started_again_and_mail_still_flows(served: Served, index: int) -> None:
    (started,) = served.events("workers.started")
    pids = [int(pid) for pid in started["pids"].split()]
    assert set(pids) == children(served.pid)
    victim = pids[index]
    os.kill(victim, signal.SIGKILL)
    (died,) = wait_for(lambda: served.events("workers.died"), timeout=20, what="workers.died")
    assert (died["worker"], died["pid"], died["status"]) == (index, victim, -signal.SIGKILL)
    (restarted,) = wait_for(lambda: served.events("workers.restarted"), timeout=20, what="workers.restarted")
    assert restarted["worker"] == index
    successor = restarted["pid"]
    assert successor not in pids
    wait_for(lambda: children(served.pid) == {pids[1 - index], successor}, timeout=20, what="the new child")
    wait_for(lambda: len(served.events("server.started", worker=index)) == 2, timeout=20, what="its start")
    sent = send_parallel(served.process.address, sessions=10, per_session=1, prefix="after")
    assert delivered_tags(served.config, 10) == sent
    _terminate(served)
    assert len(maildir_messages(served.config, ALICE)) == 10  # none delivered twice
    assert served.output.count("postroom is ready.") == 1  # the successor does not announce again


@pytest.mark.slow
def test_workers_that_keep_dying_stop_the_server(served: Served) -> None:
    for deaths in range(1, 6):
        victim = max(children(served.pid))
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda n=deaths: len(served.events("workers.died")) == n, timeout=20, what=f"death {deaths}")
        if deaths < 5:
            wait_for(lambda: len(children(served.pid)) == 2, timeout=20, what="a successor")
    assert served.process.process.wait(30) == 1
    (stopping,) = served.events("workers.stopping")
    assert stopping["reason"].startswith("5 workers died within 60")
    assert len(served.events("workers.restarted")) == 4


@pytest.mark.slow
def test_sigterm_stops_both_workers_and_removes_the_files(served: Served) -> None:
    data_dir = served.config.data_dir
    workers = children(served.pid)
    assert (data_dir / "postroom.pid").exists()
    assert (data_dir / "postroom.listen").exists()
    served.process.process.send_signal(signal.SIGTERM)
    assert served.process.process.wait(30) == 0
    assert not any(alive(pid) for pid in workers)
    assert not (data_dir / "postroom.pid").exists()
    assert not (data_dir / "postroom.listen").exists()
    exited = served.events("workers.exited")
    assert {(record["pid"], record["status"]) for record in exited} == {(pid, 0) for pid in workers}


@pytest.mark.slow
@pytest.mark.parametrize("config_overrides", [{"smtp": {"listen": ["127.0.0.1:0", "127.0.0.2:0"]}}])
def test_port_0_gives_both_workers_the_one_announced_port(served: Served) -> None:
    lines = (served.config.data_dir / "postroom.listen").read_text().splitlines()
    smtp = [line.split()[1] for line in lines if line.split()[0] == "smtp"]
    assert len(smtp) == 2
    assert len(lines) == 4  # and one line each for submission and submissions
    assert smtp[0] == "{}:{}".format(*served.process.address)
    assert smtp[1].startswith("127.0.0.2:")
    for record in served.events("server.started"):  # every worker listens where the file says
        assert record["smtp"] == " ".join(smtp), record
    for text in smtp:
        host, port = text.rsplit(":", 1)
        with smtplib.SMTP(host, int(port), timeout=30) as client:
            assert client.noop()[0] == 250
    _terminate(served)


def _read_to_end(sock: socket.socket) -> bytes:
    """What the server sends until it closes the connection (at most 20 reads; a reset ends it too)."""
    received = b""
    for _ in range(20):
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            return received + b"[reset]"
        if not chunk:
            break
        received += chunk
    return received


def _greeting(address: tuple[str, int]) -> tuple[socket.socket, bytes]:
    sock = socket.create_connection(address, timeout=30)
    return sock, sock.recv(1024)


@pytest.mark.slow
@pytest.mark.parametrize("config_overrides", [{"smtp": {"max_connections_per_ip": 4}}])
def test_workers_together_hold_no_more_than_the_connection_cap(served: Served) -> None:
    opened = [_greeting(served.process.address) for _ in range(12)]
    try:
        greetings = [greeting for _, greeting in opened]
        accepted = sum(greeting.startswith(b"220 ") for greeting in greetings)
        refused = [greeting for greeting in greetings if not greeting.startswith(b"220 ")]
        assert 2 <= accepted <= 4  # each worker holds at most its share (2); together at most the cap
        assert all(greeting.startswith(b"421 4.7.0 ") for greeting in refused), refused
    finally:
        for sock, _ in opened:
            sock.close()
    _terminate(served)


@pytest.mark.parametrize(
    ("workers", "own_process", "error"),
    [(16, False, "must be 0"), (-1, False, "must be 0"), (15, True, "at most 14 with delivery.own_process")],
)
def test_workers_out_of_range_is_a_configuration_error(
    tmp_path: Path, workers: int, own_process: bool, error: str
) -> None:
    _, config_file = write_config(tmp_path, workers=2, delivery={"own_process": own_process})
    text = config_file.read_text()
    assert "\nworkers = 2\n" in text
    config_file.write_text(text.replace("\nworkers = 2\n", f"\nworkers = {workers}\n"))
    result = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "serve"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.startswith(f"postroom: configuration error: workers: {error}"), result.stderr
    assert len(result.stderr.splitlines()) == 1


def test_workers_0_means_one_per_cpu_core(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    assert worker_count(make_config(tmp_path, workers=0)) == max(1, min(15, cores))
    assert worker_count(make_config(tmp_path, workers=3)) == 3
    assert worker_count(make_config(tmp_path)) == 1


@pytest.mark.slow
def test_reload_reopens_the_log_file_in_the_supervisor_too(served: Served) -> None:
    log_file = served.config.log_file
    victim = int(served.events("workers.started")[0]["pids"].split()[1])  # worker 1
    rotated = log_file.with_name("postroom.log.1")
    log_file.rename(rotated)  # what logrotate does before it signals the server
    os.kill(served.pid, signal.SIGHUP)
    # server.reloaded comes after the log file was opened again (app/reload.py): it is in the new file
    wait_for(lambda: served.workers_of("server.reloaded") == {0, 1}, timeout=20, what="both workers reloaded")
    os.kill(victim, signal.SIGKILL)

    def starts_of_worker_1() -> int:  # in either file
        return sum(len(served.events("server.started", file=path, worker=1)) for path in (log_file, rotated))

    wait_for(lambda: starts_of_worker_1() == 2, timeout=20, what="the successor's server.started")
    in_new_file = {event: bool(served.events(event)) for event in ("workers.died", "workers.restarted")}
    successor_lines = len(served.events("server.started", worker=1))
    _terminate(served)
    assert in_new_file == {"workers.died": True, "workers.restarted": True}
    assert successor_lines == 1  # the successor writes to the file by its name too


@pytest.mark.slow
@pytest.mark.parametrize("config_overrides", [{"smtp": {"shutdown_grace": 3}}])
def test_a_connection_during_the_shutdown_grace_is_refused_not_left_waiting(served: Served) -> None:
    busy = socket.create_connection(served.process.address, timeout=30)
    try:
        assert busy.recv(1024).startswith(b"220 ")
        busy.sendall(b"EHLO c\r\nMAIL FROM:<s@example.test>\r\nRCPT TO:<alice@postroom.test>\r\nDATA\r\n")
        wait_for(lambda: served.events("smtp.rcpt_accepted"), timeout=20, what="an open transaction")
        served.process.process.send_signal(signal.SIGTERM)
        wait_for(lambda: served.workers_of("server.stopping") == {0, 1}, timeout=20, what="both stopping")
        try:
            late = socket.create_connection(served.process.address, timeout=30)
        except ConnectionRefusedError:
            answer = b"refused"
        else:
            with late:
                answer = _read_to_end(late)
        # refused, or (accepted a moment before its worker stopped listening) told 421 at once
        assert answer == b"refused" or b"\r\n421 " in b"\r\n" + answer, answer
    finally:
        busy.close()
    assert served.process.process.wait(30) == 0
