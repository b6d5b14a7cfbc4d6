"""Run a real postroom on loopback for tests: in a thread of this process, or as a `postroom serve` child."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from postroom.app import App, running_app
from postroom.config import Config, parse_config
from postroom.observe.log import Logger
from postroom.queue import Queue


def _config_data(tmp_path: Path, sections: dict[str, Any]) -> dict[str, Any]:
    data: dict[str, Any] = {
        "hostname": "mx.postroom.test",
        "data_dir": str(tmp_path / "data"),
        "smtp": {"listen": "127.0.0.1:0", "shutdown_grace": 2},
        "submission": {"listen": "127.0.0.1:0"},
        "submissions": {"listen": "127.0.0.1:0"},
        "local": {"domains": ["postroom.test", "other.test"]},
        "delivery": {"poll_interval": 0.2},
        "queue": {"retry_schedule": [1, 2, 4]},
        # No test may ask the system's resolvers: without a dns_server, lookups go to a loopback port where
        # nothing answers, and fail (temporarily) there.
        "dns": {"nameservers": ["127.0.0.1:9"], "timeout": 1},
        # No SPF/DKIM/DMARC unless a test asks (their lookups would wait on that port): sender_auth={...}.
        "sender_auth": {"enabled": False},
        # No admin HTTP listener unless a test asks: admin={"listen": "127.0.0.1:0"}.
        "admin": {"listen": []},
    }
    for name, values in sections.items():
        if isinstance(values, dict):
            data.setdefault(name, {}).update(values)
        else:
            data[name] = values
    return data


def quiet_queue(config: Config) -> Queue:
    """The Queue of ``config``'s data folder, as a server would open it, logging nowhere (start it)."""
    return Queue(
        settings=config.queue,
        queue_dir=config.queue_dir,
        database_path=config.database_path,
        log=Logger(stream=io.StringIO()),
    )


def make_config(tmp_path: Path, **sections: Any) -> Config:
    """A Config for tests: loopback, port 0, data under tmp_path. ``smtp={"max_errors": 3}`` etc."""
    return parse_config(_config_data(tmp_path, sections))


def write_config(tmp_path: Path, **sections: Any) -> tuple[Config, Path]:
    """The same Config as make_config, also written as a TOML file for `postroom serve -c`."""
    data = _config_data(tmp_path, sections)
    lines = [f"{key} = {_toml_value(value)}" for key, value in data.items() if not isinstance(value, dict)]
    for name, table in data.items():
        if isinstance(table, dict):
            lines.append(f"[{name}]")
            lines.extend(f"{key} = {_toml_value(value)}" for key, value in table.items())
    path = tmp_path / "postroom.toml"
    path.write_text("\n".join(lines) + "\n")
    return parse_config(data), path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    return repr(value)


@dataclass
class ServerThread:
    """A postroom App running on its own event loop in a background thread."""

    config: Config
    log_stream: io.StringIO = field(default_factory=io.StringIO)
    app: App | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    @property
    def address(self) -> tuple[str, int]:
        assert self.app is not None
        return self.app.smtp_address

    @property
    def log_text(self) -> str:
        return self.log_stream.getvalue()

    def start(self) -> None:
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self._thread.start()
        if not ready.wait(20):
            raise TimeoutError("postroom did not start within 20 s")
        if self._error is not None:
            raise self._error

    def _run(self, ready: threading.Event) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            log = Logger(stream=self.log_stream, level="debug")
            try:
                async with running_app(self.config, log=log) as app:
                    self.app = app
                    ready.set()
                    await self._stop.wait()
            except BaseException as exc:
                self._error = exc
                ready.set()
                raise

        asyncio.run(main())

    def call(self, func: Any, *args: Any) -> Any:
        """Run ``func(*args)`` on the server's loop thread and return its result (coroutines awaited)."""
        assert self._loop is not None

        async def wrapper() -> Any:
            result = func(*args)
            if asyncio.iscoroutine(result):
                result = await result
            return result

        return asyncio.run_coroutine_threadsafe(wrapper(), self._loop).result(timeout=30)

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)
            if self._thread.is_alive():
                raise TimeoutError("postroom did not stop within 30 s")
        self._loop = None


@contextmanager
def server_thread(config: Config) -> Iterator[ServerThread]:
    server = ServerThread(config)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def wait_for(
    predicate: Any, *, timeout: float = 15.0, interval: float = 0.05, what: str = "condition"
) -> Any:
    """Poll ``predicate`` until it returns something truthy; bounded in time."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


def maildir_messages(config: Config, address: str) -> list[Path]:
    """Files in the new/ and cur/ folders of ``address``'s Maildir (empty when it does not exist)."""
    local, domain = address.lower().split("@")
    root = config.mailboxes_dir / domain / local
    return sorted(p for sub in ("new", "cur") if (root / sub).is_dir() for p in (root / sub).iterdir())


@dataclass
class ServeProcess:
    """`postroom serve -c FILE` as a child process; ``address`` parsed from its ready banner."""

    process: subprocess.Popen[str]
    address: tuple[str, int]
    output: list[str]

    def terminate(self, timeout: float = 30) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(10)


@contextmanager
def serve_process(config_file: Path, *, timeout: float = 30) -> Iterator[ServeProcess]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "postroom.cli.main", "-c", str(config_file), "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    output: list[str] = []
    address = None
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while address is None and time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        output.append(line)
        if "SMTP (MX)" in line:
            host, port = line.split()[-1].rsplit(":", 1)
            address = (host, int(port))
    if address is None:
        process.kill()
        process.wait(10)
        process.stdout.close()
        raise RuntimeError("postroom serve did not become ready:\n" + "".join(output))
    drain = threading.Thread(target=lambda: output.extend(process.stdout or []), daemon=True)
    drain.start()
    handle = ServeProcess(process, address, output)
    try:
        yield handle
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        drain.join(5)
        process.stdout.close()
