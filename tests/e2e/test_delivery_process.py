"""`[delivery] own_process`: the SMTP worker(s) take mail, one more process delivers it.

Real processes (`postroom serve -c FILE`), real smtplib clients on loopback, real Maildirs. The delivery
process's lines carry ``role=delivery`` in the JSON log they all share. poll_interval is set to 60 s, so a
message delivered within seconds was delivered because the SMTP worker woke the delivery process.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from postroom.app import worker_count
from tests.e2e.conftest import add_accounts
from tests.helpers.server import make_config, serve_process, wait_for, write_config
from tests.helpers.workers import Served, alive, children, delivered_tags, send_parallel

NO_POLLING = {"own_process": True, "poll_interval": 60}


def _delivery_pid(served: Served) -> int:
    (started,) = served.events("workers.started")[-1:]
    return int(started["pids"].split()[-1])  # pids in seat order: the delivery process is last


@pytest.fixture
def served(tmp_path: Path, config_overrides: dict[str, Any]) -> Iterator[Served]:
    """`postroom serve` with a delivery process beside ``workers`` SMTP workers (default 1), all started."""
    overrides = {"admin": {"listen": ["127.0.0.1:0"]}, **config_overrides}
    delivery = {**NO_POLLING, **overrides.pop("delivery", {})}
    config, config_file = write_config(tmp_path, delivery=delivery, **overrides)
    add_accounts(config)
    smtp_workers = config.workers or 1
    with serve_process(config_file) as process:
        running = Served(config, config_file, process)
        wait_for(lambda: len(children(running.pid)) == smtp_workers + 1, timeout=20, what="the processes")
        wait_for(
            lambda: len(running.events("server.started")) == smtp_workers + 1, timeout=20, what="every start"
        )
        yield running


def _metric(served: Served, name: str) -> float:
    """The sum of a metric's samples on worker 0's /metrics."""
    found = re.search(r"dashboard +http://(\S+)/", served.output)  # as `postroom serve` announced it
    assert found is not None, served.output
    with urllib.request.urlopen(f"http://{found.group(1)}/metrics", timeout=30) as response:
        text = response.read().decode()
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines() if ln.startswith(name))


@pytest.mark.slow
def test_the_delivery_process_delivers_what_the_smtp_worker_took_at_once(served: Served) -> None:
    sent = send_parallel(served.process.address, sessions=5, per_session=4, prefix="m")
    assert delivered_tags(served.config, 20) == sent  # within 30 s, though poll_interval is 60
    takers = {record.get("role") for record in served.events("message.queued")}
    deliverers = {record.get("role") for record in served.events("delivery.delivered")}
    assert (takers, deliverers) == ({None}, {"delivery"})
    assert served.output.count("postroom is ready.") == 1
    assert served.process.terminate(timeout=30) == 0
    assert len(delivered_tags(served.config, 20)) == 20  # none twice


@pytest.mark.slow
def test_the_smtp_worker_starts_once_the_delivery_process_is_up(served: Served) -> None:
    """So that "postroom is ready" means every part is: the delivery process recovered the queue first."""
    starts = served.events("server.started")
    assert [record.get("role") for record in starts] == ["delivery", None]
    (recovered,) = served.events("queue.recovered", sole_owner=True)
    assert recovered["role"] == "delivery"
    (started,) = served.events("workers.started")
    assert (started["workers"], started["delivery_process"]) == (1, True)
    assert served.process.terminate(timeout=30) == 0


def test_a_delivery_process_that_cannot_start_stops_the_server_before_it_takes_mail(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, delivery={"own_process": True})
    (config.queue_dir / "spool").parent.mkdir(parents=True)
    (config.queue_dir / "spool").write_bytes(b"")  # not a folder: the queue cannot open
    done = subprocess.run(
        [sys.executable, "-m", "postroom.cli.main", "-c", str(config_file), "serve"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 1
    assert "postroom is ready" not in done.stdout
    records = [json.loads(line) for line in config.log_file.read_text().splitlines()]
    failures = [record for record in records if record["event"] == "workers.failed"]
    assert len(failures) == 5  # started again until the crash-loop limit, each time saying why
    assert {record["worker"] for record in failures} == {1}
    assert "File exists" in failures[0]["error"]
    assert str(config.queue_dir / "spool") in failures[0]["error"]
    assert not [record for record in records if record["event"] in ("server.started", "workers.started")]


@pytest.mark.slow
def test_worker_0_s_metrics_count_the_delivery_process_s_deliveries(served: Served) -> None:
    sent = send_parallel(served.process.address, sessions=2, per_session=3, prefix="c")
    assert delivered_tags(served.config, 6) == sent
    wait_for(
        lambda: _metric(served, 'postroom_deliveries_total{destination="local",result="delivered"}') == 6,
        timeout=20,
        what="six deliveries on /metrics",
    )
    assert _metric(served, "postroom_messages_received_total") == 6
    assert served.process.terminate(timeout=30) == 0


@pytest.mark.slow
def test_a_killed_delivery_process_is_started_again_and_delivers_what_waited(served: Served) -> None:
    victim = _delivery_pid(served)
    os.kill(victim, signal.SIGSTOP)  # stopped first, so that the mail below waits for its successor
    sent = send_parallel(served.process.address, sessions=2, per_session=2, prefix="w")
    os.kill(victim, signal.SIGKILL)
    (died,) = wait_for(lambda: served.events("workers.died"), timeout=20, what="workers.died")
    assert (died["pid"], died["status"]) == (victim, -signal.SIGKILL)
    assert delivered_tags(served.config, 4) == sent  # the successor finds them at its start
    after = send_parallel(served.process.address, sessions=1, per_session=2, prefix="x")
    assert delivered_tags(served.config, 6) == sent | after  # and it is woken like the first
    assert {record["role"] for record in served.events("delivery.delivered")} == {"delivery"}
    assert served.process.terminate(timeout=30) == 0


@pytest.mark.slow
def test_sighup_reloads_the_smtp_worker_and_the_delivery_process(served: Served, tmp_path: Path) -> None:
    write_config(tmp_path, admin={"listen": ["127.0.0.1:0"]}, delivery={**NO_POLLING, "concurrency": 3})
    os.kill(served.pid, signal.SIGHUP)  # the supervisor passes it on to both

    def reloaded_by() -> set[Any]:
        return {record.get("role") for record in served.events("config.reloaded")}

    wait_for(lambda: reloaded_by() == {None, "delivery"}, timeout=20, what="both processes reloaded")
    for record in served.events("config.reloaded"):
        assert record["changed"] == "delivery.concurrency"
    sent = send_parallel(served.process.address, sessions=2, per_session=1, prefix="r")
    assert delivered_tags(served.config, 2) == sent
    assert served.process.terminate(timeout=30) == 0


@pytest.mark.slow
def test_sigterm_stops_the_smtp_worker_and_the_delivery_process(served: Served) -> None:
    processes = children(served.pid)
    assert len(processes) == 2
    served.process.process.send_signal(signal.SIGTERM)
    assert served.process.process.wait(30) == 0
    assert not any(alive(pid) for pid in processes)
    exited = served.events("workers.exited")
    assert {(record["pid"], record["status"]) for record in exited} == {(pid, 0) for pid in processes}


@pytest.mark.slow
@pytest.mark.parametrize("config_overrides", [{"workers": 2}])
def test_two_smtp_workers_wake_one_delivery_process(served: Served) -> None:
    assert len(children(served.pid)) == 3
    sent = send_parallel(served.process.address, sessions=12, per_session=2, prefix="t")
    assert delivered_tags(served.config, 24) == sent
    queued_by = {record["worker"] for record in served.events("message.queued")}
    delivered_by = {(record["worker"], record["role"]) for record in served.events("delivery.delivered")}
    assert queued_by == {0, 1}  # the kernel spread 12 sessions over both (SO_REUSEPORT)
    assert delivered_by == {(2, "delivery")}  # numbered after the SMTP workers
    for record in served.events("message.queued"):
        assert record["queue_id"][13] == f"{record['worker'] + 1:x}"
    assert served.process.terminate(timeout=30) == 0


def test_workers_0_beside_a_delivery_process_is_at_most_14(tmp_path: Path) -> None:
    cores = len(os.sched_getaffinity(0))
    config = make_config(tmp_path, workers=0, delivery={"own_process": True})
    assert worker_count(config) == max(1, min(14, cores))

