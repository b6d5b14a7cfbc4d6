"""The links between the SMTP workers, the delivery process (``[delivery] own_process``) and their
supervisor: datagram socket pairs that the supervisor (app/workers.py) makes before it forks, and keeps,
so that a process started again after dying finds them open.

- wake: an SMTP worker sends one octet after each group commit; the delivery process reads whatever came
  and wakes its scheduler, just as a commit in its own process would (Postfix's cleanup wakes qmgr through
  a FIFO the same way). Without it the delivery process would find new mail only every poll_interval.
- events: the delivery process sends its ``delivery.*`` log records (JSON) to worker 0, whose listeners
  (metrics, the dashboard's activity) count them as if it had logged them itself. The lines themselves are
  written by the process that logged them; nothing is written twice.
- ready: the delivery process sends one octet to the supervisor once it is up, and the supervisor starts
  the SMTP workers (so that "postroom is ready" means every process is).

All are best effort and never block a process: when a socket is full the datagram is dropped. A dropped
wake is covered by the next one (or by poll_interval); a dropped record is one count missing from /metrics,
never a message. No mail and no decision goes over these sockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from postroom.observe.log import Logger

__all__ = [
    "Links",
    "drain",
    "forward_events",
    "make_links",
    "notify_commits",
    "receive_events",
    "receive_wakes",
    "say_ready",
]

_BUFFER = 1 << 20  # bytes of socket buffer asked for (the kernel may give less): room for bursts
_MAX_RECORD = 32 * 1024  # a record larger than this (a traceback, say) is not forwarded
_FORWARDED = "delivery."  # the events worker 0's metrics and dashboard need from the delivery process


@dataclass(frozen=True)
class Links:
    """The six ends. ``wake_out``: SMTP workers send; ``wake_in``: the delivery process reads.
    ``events_out``: the delivery process sends; ``events_in``: worker 0 reads. ``ready_out``: the
    delivery process sends; ``ready_in``: the supervisor reads."""

    wake_out: socket.socket
    wake_in: socket.socket
    events_out: socket.socket
    events_in: socket.socket
    ready_out: socket.socket
    ready_in: socket.socket

    def close(self) -> None:
        for end in fields(self):
            getattr(self, end.name).close()


def make_links() -> Links:
    return Links(*_pair(), *_pair(), *_pair())  # (sender, receiver) each: wake, events, ready, in field order


def _pair() -> tuple[socket.socket, socket.socket]:
    sender, receiver = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    for sock, option in ((sender, socket.SO_SNDBUF), (receiver, socket.SO_RCVBUF)):
        sock.setblocking(False)
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, option, _BUFFER)
    return sender, receiver


def _send(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # full (BlockingIOError), or too large: dropped, see above
        sock.send(data)


def drain(sock: socket.socket) -> list[bytes]:
    """Every datagram waiting on ``sock`` (non-blocking)."""
    found: list[bytes] = []
    with contextlib.suppress(BlockingIOError, InterruptedError):
        while True:
            found.append(sock.recv(_MAX_RECORD + 1024))
    return found


def notify_commits(work: asyncio.Event, sock: socket.socket) -> asyncio.Task[None]:
    """In an SMTP worker without a scheduler: an octet on ``sock`` each time ``work`` is set (the queue sets
    it after every group commit). Cancel the task to stop."""

    async def run() -> None:
        while True:
            await work.wait()
            work.clear()
            _send(sock, b"!")

    return asyncio.get_running_loop().create_task(run(), name="delivery-wake")


def receive_wakes(sock: socket.socket, work: asyncio.Event) -> Callable[[], None]:
    """In the delivery process: set ``work`` (the scheduler's wake-up) whenever octets arrive on ``sock``.
    Returns the function that stops listening."""

    def readable() -> None:
        if drain(sock):
            work.set()

    work.set()  # what was committed while no delivery process ran (started again after dying)
    return _watch(sock, readable)


def say_ready(sock: socket.socket) -> None:
    """In the delivery process, once it is up: its supervisor may start the SMTP workers."""
    _send(sock, b"!")


def forward_events(log: Logger, sock: socket.socket) -> None:
    """In the delivery process: every ``delivery.*`` record it logs goes to worker 0 as well."""

    def forward(record: dict[str, Any]) -> None:
        if str(record.get("event", "")).startswith(_FORWARDED):
            data = json.dumps(record, default=str).encode()
            if len(data) <= _MAX_RECORD:
                _send(sock, data)

    log.add_listener(forward)


def receive_events(sock: socket.socket, log: Logger) -> Callable[[], None]:
    """In worker 0: the delivery process's records, handed to this process's log listeners (not written
    again). Returns the function that stops listening."""

    def readable() -> None:
        for data in drain(sock):
            with contextlib.suppress(ValueError):  # not ours, or cut: nothing to count
                record = json.loads(data)
                if isinstance(record, dict):
                    log.feed(record)

    return _watch(sock, readable)


def _watch(sock: socket.socket, readable: Callable[[], None]) -> Callable[[], None]:
    """Calls ``readable`` on the running loop whenever ``sock`` has data; returns what stops that."""
    loop = asyncio.get_running_loop()
    loop.add_reader(sock.fileno(), readable)

    def stop() -> None:
        loop.remove_reader(sock.fileno())

    return stop
