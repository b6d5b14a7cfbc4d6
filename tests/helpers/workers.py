"""Helpers for tests of several server processes (`workers`, `[delivery] own_process`): the served
process tree, its JSON log, sessions sent in parallel, what reached the Maildir."""

from __future__ import annotations

import json
import smtplib
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from postroom.config import Config
from tests.helpers import processes
from tests.helpers.server import ServeProcess, maildir_messages, wait_for

__all__ = ["ALICE", "Served", "alive", "children", "delivered_tags", "send", "send_parallel"]

ALICE = "alice@postroom.test"
SERVE = "postroom.cli.main"  # in the command line of `postroom serve`, and so of the workers it forks


@dataclass
class Served:
    config: Config
    config_file: Path
    process: ServeProcess

    @property
    def pid(self) -> int:
        return self.process.process.pid

    @property
    def output(self) -> str:
        return "".join(self.process.output)

    def events(self, event: str, *, file: Path | None = None, **match: Any) -> list[dict[str, Any]]:
        """The log file's records of ``event`` whose fields equal ``match`` (every line must be JSON)."""
        path = file or self.config.log_file
        if not path.exists():
            return []
        lines = path.read_text().splitlines()
        records = [json.loads(line) for line in lines if line]
        return [r for r in records if r["event"] == event and all(r.get(k) == v for k, v in match.items())]

    def workers_of(self, event: str) -> set[int]:
        return {record["worker"] for record in self.events(event) if "worker" in record}


def children(pid: int) -> set[int]:
    """The live processes `postroom serve` (``pid``, the supervisor) forked: its workers."""
    return set(processes.children(pid, SERVE))


def alive(pid: int) -> bool:
    """True while the worker ``pid`` runs (not a zombie waiting for its parent)."""
    return processes.alive(pid, SERVE)


def send(address: tuple[str, int], messages: list[str], barrier: threading.Barrier | None = None) -> None:
    """One SMTP session sending one message per tag in ``messages``; ``barrier``: wait for the others first,
    so that every session is open at the same time."""
    with smtplib.SMTP(*address, timeout=30) as client:
        client.ehlo("client.test")
        if barrier is not None:
            barrier.wait()
        for tag in messages:
            client.sendmail(
                "sender@example.test", [ALICE], f"Subject: {tag}\r\n\r\nbody of {tag}\r\n".encode()
            )


def send_parallel(address: tuple[str, int], sessions: int, per_session: int, prefix: str) -> set[str]:
    """``sessions`` sessions open at once, ``per_session`` messages each; returns the tags sent."""
    barrier = threading.Barrier(sessions, timeout=30)
    batches = [[f"{prefix}-{s}-{m}" for m in range(per_session)] for s in range(sessions)]
    with ThreadPoolExecutor(max_workers=sessions) as pool:
        for future in [pool.submit(send, address, batch, barrier) for batch in batches]:
            future.result(timeout=60)
    return {tag for batch in batches for tag in batch}


def delivered_tags(config: Config, expected: int) -> set[str]:
    paths = wait_for(
        lambda: (found := maildir_messages(config, ALICE)) and len(found) >= expected and found,
        timeout=30,
        what=f"{expected} messages in the Maildir",
    )
    return {path.read_text().split("body of ", 1)[1].strip() for path in paths}
