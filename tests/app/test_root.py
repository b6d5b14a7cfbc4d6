"""The App in the delivery process's seat (``[delivery] own_process``): the queue and the scheduler, none of
what only a process that takes mail needs (accounts, TLS, logins, rate limits, listeners), and a reload
that still reaches its scheduler and routing. Run in this process, on a real data folder."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path
from typing import Any

from postroom.app import Seat, running_app
from postroom.config import Config
from postroom.observe.log import Logger
from postroom.queue import DueRecipient
from tests.helpers.server import make_config, write_config

DELIVERY_SEAT = Seat(index=1, count=1, sockets={}, role="delivery")


def _logger() -> tuple[Logger, list[dict[str, Any]]]:
    records: list[dict[str, Any]] = []
    log = Logger(stream=io.StringIO())
    log.add_listener(records.append)
    return log, records


def _smtp_recipient(mailbox: str) -> DueRecipient:
    return DueRecipient("q", 0, mailbox, mailbox, "s@postroom.test", 1, 0.0, None, "smtp")


def test_the_delivery_process_builds_no_listener_and_no_login_parts(tmp_path: Path) -> None:
    log, records = _logger()

    async def run() -> None:
        async with running_app(make_config(tmp_path), log=log, seat=DELIVERY_SEAT) as app:
            assert app.listeners == []
            assert (app.accounts_db, app.tls_context, app.rate_limits, app.admin) == (None, None, None, None)
        assert not (tmp_path / "data" / "tls").exists()  # no certificate made for it

    asyncio.run(run())
    assert [record["event"] for record in records if record["event"].startswith("server.")] == [
        "server.started",
        "server.stopped",
    ]


def test_a_reload_reaches_the_delivery_process_s_scheduler_and_routing(tmp_path: Path) -> None:
    log, records = _logger()
    config, _file = write_config(tmp_path)
    loaded: list[Config] = []

    def loader() -> Config:
        new, _path = write_config(tmp_path, delivery={"concurrency": 3}, local={"domains": ["new.test"]})
        loaded.append(new)
        return new

    async def run() -> None:
        async with running_app(config, log=log, seat=DELIVERY_SEAT, config_loader=loader) as app:
            assert app.reload() is False  # no certificate to load again
            assert app.config.delivery.concurrency == 3
            router, _bouncer = app.routing
            local, remote = router.split([_smtp_recipient("a@new.test"), _smtp_recipient("b@postroom.test")])
            assert [r.mailbox for r in local] == ["a@new.test"]  # ours now: never over the network
            assert [[r.mailbox for r in group] for group in remote] == [["b@postroom.test"]]

    asyncio.run(run())
    assert len(loaded) == 1
    (reloaded,) = [record for record in records if record["event"] == "config.reloaded"]
    assert set(reloaded["changed"].split(",")) == {"delivery.concurrency", "local.domains"}
