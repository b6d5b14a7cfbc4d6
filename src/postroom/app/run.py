"""Running an App: as a context manager (tests, tools) or until SIGTERM/SIGINT with SIGHUP reloading, and
the files that tell other commands about the running server (pid, listen addresses)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterable, Iterator

from postroom.app.links import say_ready
from postroom.app.root import App
from postroom.app.seat import Seat
from postroom.config.schema import Config
from postroom.observe.log import Logger

__all__ = ["LISTEN_FILE", "running_app", "serve_forever", "server_files"]

LISTEN_FILE = "postroom.listen"
PID_FILE = "postroom.pid"


@contextlib.asynccontextmanager
async def running_app(
    config: Config,
    *,
    log: Logger | None = None,
    config_loader: Callable[[], Config] | None = None,
    seat: Seat | None = None,
) -> AsyncIterator[App]:
    """Start an App and yield it once every listener is bound; stop it on the way out."""
    app = App(
        config=config,
        log=log or Logger(level=config.log.level, fmt=config.log.format),
        config_loader=config_loader,
        seat=seat,
    )
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def serve_forever(
    config: Config,
    *,
    log: Logger,
    on_ready: Callable[[App], None],
    config_loader: Callable[[], Config] | None = None,
    seat: Seat | None = None,
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads (``config_loader`` reads).
    A worker (``seat``) leaves the pid and listen files to its supervisor (app/workers.py)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with running_app(config, log=log, config_loader=config_loader, seat=seat) as app:
        loop.add_signal_handler(signal.SIGHUP, app.reload)
        with contextlib.ExitStack() as files:
            if seat is None:
                bound = [(item.name, host, port) for item in app.listeners for host, port in item.bound]
                files.enter_context(server_files(config, bound))
            on_ready(app)
            if seat is not None and seat.ready is not None:
                say_ready(seat.ready)
            await stop.wait()
            log.info("server.stopping", reason="signal")


@contextlib.contextmanager
def server_files(config: Config, bound: Iterable[tuple[str, str, int]]) -> Iterator[None]:
    """The listen file (for `postroom sendmail`: where the server listens, "name host:port" per line) and
    the pid file (for `postroom reload`: the process to signal), there while the server runs."""
    listen_file, pid_file = config.data_dir / LISTEN_FILE, config.data_dir / PID_FILE
    _write_listen_file(listen_file, bound)
    pid_file.write_text(f"{os.getpid()}\n")
    try:
        yield
    finally:
        pid_file.unlink(missing_ok=True)
        listen_file.unlink(missing_ok=True)


def _write_listen_file(path: os.PathLike[str], bound: Iterable[tuple[str, str, int]]) -> None:
    """One line per bound address (ports as bound, so port 0 in the config works)."""
    lines = [f"{name} {host}:{port}\n" for name, host, port in bound]
    temporary = f"{os.fspath(path)}.tmp"
    with open(temporary, "w") as file:
        file.writelines(lines)
    os.replace(temporary, path)
