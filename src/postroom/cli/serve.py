"""`postroom serve`: run everything until SIGTERM; print where it listens and how to send a first mail."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from postroom.app import App, Seat, serve_forever, supervise, worker_count
from postroom.config import Config, ConfigError, load_config
from postroom.observe.log import Logger
from postroom.server.tls import fingerprint

__all__ = ["register"]


def register(commands: Any) -> None:
    parser = commands.add_parser("serve", help="run the mail server")
    parser.add_argument("--log-format", choices=("text", "json"), help="override [log] format")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="override [log] level"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace, config: Config) -> int:
    config = _with_overrides(config, args)
    log = Logger(
        level=config.log.level,
        fmt=args.log_format or config.log.format,
        file=config.log_file,
    )
    loader = _loader(args.config, args)
    try:
        count = worker_count(config)
        if count == 1 and not config.delivery.own_process:
            _serve(config, log=log, loader=loader, seat=None)
            return 0

        def worker(seat: Seat) -> int:
            fresh = _current(config, loader, log) if seat.generation else config
            _serve(fresh, log=log, loader=loader, seat=seat)
            return 0

        return supervise(config, count=count, worker_main=worker, log=log)
    finally:
        log.close()


def _serve(config: Config, *, log: Logger, loader: Callable[[], Config] | None, seat: Seat | None) -> None:
    """One server process to its end: the only one, or a worker (which logs its number on every line)."""
    if seat is not None:
        log = log.bind(worker=seat.index, **({"role": "delivery"} if seat.role == "delivery" else {}))
    first = seat is None or (seat.index == 0 and seat.generation == 0)  # the announcement is made once
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(
            serve_forever(
                config, log=log, on_ready=_announce if first else _quiet, config_loader=loader, seat=seat
            )
        )


def _current(config: Config, loader: Callable[[], Config] | None, log: Logger) -> Config:
    """The config file as it is now, for a worker started again (the first config if it is unreadable)."""
    if loader is None:
        return config
    try:
        return loader()
    except ConfigError as exc:
        log.error("config.reload_failed", error=str(exc), action="kept the first configuration")  # noqa: TRY400
        return config


def _quiet(app: App) -> None:
    """A worker other than the first says nothing when ready (the first one speaks for the server)."""


def _with_overrides(config: Config, args: argparse.Namespace) -> Config:
    """--log-level wins over [log] level, at start and at every reload."""
    if args.log_level is None:
        return config
    return dataclasses.replace(config, log=dataclasses.replace(config.log, level=args.log_level))


def _loader(path: Path | None, args: argparse.Namespace) -> Callable[[], Config] | None:
    """How SIGHUP reads the configuration again: the file given with -c (none: nothing to read)."""
    if path is None:
        return None
    return lambda: _with_overrides(load_config(path), args)


def _loop_factory() -> Any:
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, absent on some platforms
    except ImportError:  # pragma: no cover
        return None
    return uvloop.new_event_loop


def _announce(app: App) -> None:
    """What a newcomer needs once the server is ready: where it listens, one command to send a mail."""
    host, port = app.smtp_address
    domain = app.config.local.domains[0]
    data_dir = app.config.data_dir.resolve()
    labels = {"smtp": "SMTP (MX)", "submission": "submission", "submissions": "submissions"}
    lines = ["postroom is ready."]
    for listener in app.listeners:
        for bound_host, bound_port in listener.bound:
            lines.append(f"  {labels.get(listener.name, listener.name):<11} {bound_host}:{bound_port}")
    if app.admin is not None:
        for bound_host, bound_port in app.admin.bound:
            lines.append(f"  dashboard   http://{bound_host}:{bound_port}/ (metrics at /metrics)")
    lines.append(f"  data        {data_dir}")
    if app.certificate is not None:
        kind = "self-signed, made on first start" if app.certificate.generated else "from [tls]"
        lines.append(f"  TLS         {app.certificate.cert_file} ({kind})")
        lines.append(f"  SHA-256     {fingerprint(app.certificate.cert_file)}")
    lines += [
        "",
        "Send a first message (postmaster@ always exists) and read it from its Maildir:",
        f"  python3 -c \"import smtplib; smtplib.SMTP('{host}', {port}).sendmail('you@example.test', "
        f"['postmaster@{domain}'], 'Subject: hello\\r\\n\\r\\nIt works.\\r\\n')\"",
        f"  ls {data_dir}/mailboxes/{domain}/postmaster/new/",
        "Add a mailbox:  postroom user add alice@" + domain + " --password-stdin",
        "Stop with Ctrl-C (SIGTERM and SIGINT shut down gracefully).",
    ]
    print("\n".join(lines), file=sys.stdout, flush=True)
