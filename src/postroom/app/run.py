"""Running an App: as a context manager (tests, tools) or until SIGTERM/SIGINT with SIGHUP reloading, and
the files that tell other commands about the running server (pid, listen addresses)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Callable

from postroom.app.root import App
from postroom.config.schema import Config
from postroom.observe.log import Logger

__all__ = ["LISTEN_FILE", "running_app", "serve_forever"]

LISTEN_FILE = "postroom.listen"


@contextlib.asynccontextmanager
async def running_app(
    config: Config, *, log: Logger | None = None, config_loader: Callable[[], Config] | None = None
) -> AsyncIterator[App]:
    """Start an App and yield it once every listener is bound; stop it on the way out."""
    app = App(
        config=config,
        log=log or Logger(level=config.log.level, fmt=config.log.format),
        config_loader=config_loader,
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
) -> None:
    """Run until SIGTERM or SIGINT, then shut down gracefully; SIGHUP reloads (``config_loader`` reads)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    pid_file = config.data_dir / "postroom.pid"
    async with running_app(config, log=log, config_loader=config_loader) as app:
        loop.add_signal_handler(signal.SIGHUP, app.reload)
        listen_file = config.data_dir / LISTEN_FILE
        _write_listen_file(listen_file, app)  # for `postroom sendmail`: where the running server listens
        pid_file.write_text(f"{os.getpid()}\n")  # for `postroom reload`
        try:
            on_ready(app)
            await stop.wait()
            log.info("server.stopping", reason="signal")
        finally:
            pid_file.unlink(missing_ok=True)
            listen_file.unlink(missing_ok=True)


def _write_listen_file(path: os.PathLike[str], app: App) -> None:
    """One line per bound address, "name host:port" (ports as bound, so port 0 in the config works)."""
    lines = [f"{item.name} {host}:{port}\n" for item in app.listeners for host, port in item.bound]
    temporary = f"{os.fspath(path)}.tmp"
    with open(temporary, "w") as file:
        file.writelines(lines)
    os.replace(temporary, path)
