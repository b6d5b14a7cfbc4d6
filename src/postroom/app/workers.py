"""Several server processes (``workers`` > 1, or ``[delivery] own_process``): the supervisor binds every
listener's sockets, one set per worker (SO_REUSEPORT: the kernel spreads new connections over them), forks
the workers, passes signals on (SIGTERM and SIGINT stop them, SIGHUP reloads them) and starts a worker
again when one dies.

With ``[delivery] own_process`` one more process, the delivery process, runs the scheduler and every
delivery while the SMTP workers only take mail: their event loops no longer share a GIL with delivery
threads (measured in docs/performance.md). The supervisor makes the links between them (links.py),
starts the delivery process first and the SMTP workers once it says it is up.

The supervisor runs no event loop and touches no mail. Each worker is a whole App (run.py) on the shared
data folder: the queue's lock lets the first one recover the spool while the others wait (queue/spool.py),
every worker's queue ids carry its own digit, and claims keep two workers from delivering one recipient.
Worker 0 also serves the admin listener. A worker that dies leaves its sockets open in the supervisor, so
connections the kernel gave them wait in the backlog for its successor instead of being refused.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from postroom.app.build import listen_addresses
from postroom.app.links import Links, drain, make_links
from postroom.app.run import server_files
from postroom.app.seat import Seat
from postroom.config.schema import Config, ListenAddress
from postroom.observe.log import Logger
from postroom.server.listener import BACKLOG, socket_family
from postroom.server.tls import ensure_certificate
from postroom.store.sqlite import open_database

__all__ = ["MAX_WORKERS", "supervise", "worker_count"]

MAX_WORKERS = 15  # queue ids have one hex digit for the worker (queue/spool.py)
_SIGNALS = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD}
_RESTARTS = 5  # a worker that dies this many times ...
_RESTART_WINDOW = 60.0  # ... within this many seconds stops the server: a crash loop helps nobody
_KILL_AFTER = 20.0  # seconds after shutdown_grace before the workers still running are killed
_PR_SET_PDEATHSIG = 1
_READY_POLL = 0.01  # seconds between looks for the delivery process's "ready" while the SMTP workers wait
_READY_WAIT = 30.0  # after this many seconds without it, the SMTP workers start anyway

WorkerMain = Callable[[Seat], int]  # runs one worker to its end in the forked child; its exit status


def worker_count(config: Config) -> int:
    """``workers`` from the config; 0 means one per CPU core this process may run on (at most 15, or 14
    beside a delivery process)."""
    if config.workers:
        return config.workers
    most = MAX_WORKERS - 1 if config.delivery.own_process else MAX_WORKERS
    return max(1, min(most, len(os.sched_getaffinity(0))))


def supervise(config: Config, *, count: int, worker_main: WorkerMain, log: Logger) -> int:
    """Runs ``count`` SMTP workers (and the delivery process with ``[delivery] own_process``) until SIGTERM
    or SIGINT; returns the exit status (0 after a clean stop)."""
    _prepare_data(config)
    seats = _bind(config, count)
    links = make_links() if config.delivery.own_process else None
    if links is not None:
        seats = _linked(seats, links)
    bound = [(name, *sock.getsockname()[:2]) for name, socks in seats[0].sockets.items() for sock in socks]
    previous_mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
    supervisor = _Supervisor(
        worker_main=worker_main,
        log=log,
        mask=previous_mask,
        config=config,
        seats=seats,
        ready=links.ready_in if links is not None else None,
    )
    try:
        with server_files(config, bound):  # before the fork: a worker is never ready before the pid file
            supervisor.start()
            return supervisor.run()
    finally:
        supervisor.kill_all()
        supervisor.close_sockets()
        if links is not None:
            links.close()
        signal.pthread_sigmask(signal.SIG_SETMASK, previous_mask)


@dataclass
class _Supervisor:
    worker_main: WorkerMain
    log: Logger
    mask: set[int | signal.Signals]
    config: Config
    seats: list[Seat]
    ready: socket.socket | None  # the delivery process says here that it is up (None: there is none)
    children: dict[int, Seat] = field(default_factory=dict)
    waiting: list[Seat] = field(default_factory=list)  # SMTP workers to start once the delivery process is up
    started_at: float = 0.0
    deaths: list[float] = field(default_factory=list)
    stop_at: float | None = None  # when the stop began (SIGTERM); None: running
    status: int = 0

    def start(self) -> None:
        """The delivery process first, when there is one, and the SMTP workers once it is up (it recovered
        the queue and its scheduler runs): "postroom is ready", which worker 0 prints, then means that every
        part is, and a delivery process that cannot start stops the server before it takes any mail."""
        delivery = [seat for seat in self.seats if seat.role == "delivery"]
        self.waiting = [seat for seat in self.seats if seat.role != "delivery"] if delivery else []
        self.started_at = time.monotonic()
        for seat in delivery or self.seats:
            self.spawn(seat)
        if not self.waiting:
            self._started()

    def spawn(self, seat: Seat) -> None:
        pid = os.fork()
        if pid == 0:  # the worker: never returns into the supervisor's code
            status = 1
            try:
                self.close_sockets(keep=seat.index)  # once it stops listening, its sockets are closed
                status = _become_worker(seat, self.mask, self.worker_main)
            except OSError as exc:  # the data folder, a file, a port: the operator's to mend, in one line
                self.log.error("workers.failed", worker=seat.index, error=str(exc))  # noqa: TRY400
            except Exception as exc:  # a bug: with its traceback
                self.log.failure("workers.failed", exc, worker=seat.index)
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(status)
        self.children[pid] = seat

    def run(self) -> int:
        while self.children:
            info = signal.sigtimedwait(_SIGNALS, _READY_POLL if self.waiting else 1.0)
            if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
                self.stop("signal")
            elif info is not None and info.si_signo == signal.SIGHUP:
                with contextlib.suppress(OSError):  # after logrotate: its own lines, and those of workers
                    self.log.reopen()  # started again from now on, go to the new file
                self.log.info("workers.reload", workers=len(self.children))
                self._signal_all(signal.SIGHUP)
            self._reap()
            self._start_waiting()
            grace = self.config.smtp.shutdown_grace + _KILL_AFTER
            if self.stop_at is not None and time.monotonic() - self.stop_at > grace:
                self.log.error("workers.killed", workers=len(self.children), after=round(grace, 1))
                self.kill_all()
                self.status = 1
        return self.status

    def _start_waiting(self) -> None:
        """The SMTP workers, once the delivery process said it is up (or after _READY_WAIT: mail is taken
        even when delivery is slow to start; it is logged)."""
        if self.ready is None:
            return
        said_ready = bool(drain(self.ready))  # every turn: a delivery process started again says so too
        if not self.waiting:
            return
        if not said_ready:
            if time.monotonic() - self.started_at < _READY_WAIT:
                return
            self.log.warning("workers.delivery_not_ready", after=_READY_WAIT, action="SMTP workers started")
        for seat in self.waiting:
            self.spawn(seat)
        self.waiting = []
        self._started()

    def _started(self) -> None:
        by_seat = sorted(self.children.items(), key=lambda item: item[1].index)
        self.log.info(
            "workers.started",
            workers=sum(seat.role == "smtp" for _pid, seat in by_seat),
            delivery_process=any(seat.role == "delivery" for _pid, seat in by_seat),
            pids=" ".join(str(pid) for pid, _seat in by_seat),
        )

    def stop(self, reason: str) -> None:
        self.waiting = []  # not started yet: they never will be
        if self.stop_at is None:
            self.log.info("workers.stopping", reason=reason, workers=len(self.children))
            self.stop_at = time.monotonic()
            self.close_sockets()  # no successor will take them: new connections are refused, not held
        self._signal_all(signal.SIGTERM)

    def close_sockets(self, keep: int | None = None) -> None:
        """Close the listening sockets of every seat but ``keep`` (in a worker: its own)."""
        for seat in self.seats:
            if seat.index != keep:
                _close(seat.sockets)

    def _reap(self) -> None:
        while self.children:
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            seat = self.children.pop(pid, None)
            if seat is None:
                continue
            code = os.waitstatus_to_exitcode(wait_status)
            if self.stop_at is not None:
                self.log.info("workers.exited", worker=seat.index, pid=pid, status=code)
                self.status = self.status or (1 if code else 0)
                continue
            self.log.error("workers.died", worker=seat.index, pid=pid, status=code)
            now = time.monotonic()
            self.deaths = [t for t in self.deaths if now - t < _RESTART_WINDOW] + [now]
            if len(self.deaths) >= _RESTARTS:
                self.status = 1
                self.stop(f"{len(self.deaths)} workers died within {_RESTART_WINDOW:.0f} s")
                continue
            self.spawn(dataclasses.replace(seat, generation=seat.generation + 1))
            self.log.info("workers.restarted", worker=seat.index, pid=self._pid_of(seat.index))

    def _pid_of(self, index: int) -> int:
        return next(pid for pid, held in self.children.items() if held.index == index)

    def _signal_all(self, signum: signal.Signals) -> None:
        for pid in self.children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    def kill_all(self) -> None:
        """SIGKILL what is left and reap it (the way out after the grace, or when the supervisor fails)."""
        self._signal_all(signal.SIGKILL)
        for pid in list(self.children):
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        self.children.clear()


def _become_worker(seat: Seat, mask: set[int | signal.Signals], worker_main: WorkerMain) -> int:
    """In the forked child: die with the supervisor, take back the signals, run the worker."""
    with contextlib.suppress(OSError, AttributeError):  # Linux only: SIGTERM when the supervisor dies
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    # A reload before the worker's loop takes SIGHUP would end it (the default action): ignored until then.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    return worker_main(seat)


def _prepare_data(config: Config) -> None:
    """What the workers would otherwise race for: the data folder, the schema, a self-signed certificate."""
    config.data_dir.mkdir(parents=True, exist_ok=True)
    open_database(config.database_path).close()  # migrates once, here
    ensure_certificate(
        cert_file=config.tls.cert_file,
        key_file=config.tls.key_file,
        data_dir=config.data_dir,
        hostname=config.hostname,
    )


def _bind(config: Config, count: int) -> list[Seat]:
    """One socket per worker for each listen address, all on the same port (port 0: the first one's)."""
    per_worker: list[dict[str, list[socket.socket]]] = [{} for _ in range(count)]
    try:
        for name, addresses in listen_addresses(config).items():
            for address in addresses:
                for index, sock in enumerate(_bind_address(address, count)):
                    per_worker[index].setdefault(name, []).append(sock)
    except BaseException:
        for sockets in per_worker:
            _close(sockets)
        raise
    return [Seat(index=i, count=count, sockets=sockets) for i, sockets in enumerate(per_worker)]


def _linked(seats: list[Seat], links: Links) -> list[Seat]:
    """The SMTP workers with their ends of the links, and the delivery process's seat after them."""
    smtp = [
        dataclasses.replace(seat, wake=links.wake_out, events=links.events_in if seat.index == 0 else None)
        for seat in seats
    ]
    delivery = Seat(
        index=len(seats),
        count=len(seats),
        sockets={},
        role="delivery",
        wake=links.wake_in,
        events=links.events_out,
        ready=links.ready_out,
    )
    return [*smtp, delivery]


def _close(sockets: Mapping[str, Sequence[socket.socket]]) -> None:
    for socks in sockets.values():
        for sock in socks:
            sock.close()


def _bind_address(address: ListenAddress, count: int) -> Sequence[socket.socket]:
    family = socket_family(address.host)
    host = "127.0.0.1" if address.host == "localhost" else address.host
    sockets: list[socket.socket] = []
    port = address.port
    try:
        for _ in range(count):
            sock = socket.socket(family, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((host, port))
            port = sock.getsockname()[1]
            sock.listen(BACKLOG)
            sock.setblocking(False)
    except OSError as exc:
        for sock in sockets:
            sock.close()
        raise OSError(exc.errno, f"cannot listen on {address.host}:{address.port}: {exc.strerror}") from None
    return sockets
