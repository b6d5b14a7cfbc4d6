"""Rate limits and greylisting through a real server on loopback, spoken to with smtplib: per-sender
recipients per hour, messages per connection, connections per minute, greylisting that lets the retry in
once the (fake) clock has moved, and counts that survive a restart. The App runs on the test's own loop;
every client runs in a worker thread."""

from __future__ import annotations

import asyncio
import smtplib
import typing
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from postroom.app import App
from postroom.config import Config
from postroom.observe.log import Logger
from tests.e2e.conftest import add_accounts
from tests.helpers.fakes import FakeClock, Records
from tests.helpers.server import make_config

MESSAGE = b"Subject: limits\r\n\r\nHello.\r\n"


def _config(tmp_path: Path, **limits: Any) -> Config:
    greylist = limits.pop("greylist", {})
    config = make_config(
        tmp_path, limits={"exempt_networks": [], **limits}, greylist=greylist
    )  # loopback is exempt by default: these tests are the clients the limits are for
    add_accounts(config)
    return config


@asynccontextmanager
async def _running(config: Config, clock: FakeClock, log: Logger) -> AsyncIterator[App]:
    app = App(config=config, log=log, clock=clock)
    await app.start()
    try:
        yield app
    finally:
        await app.stop()


async def _client(app: App, talk: Callable[[smtplib.SMTP], Any]) -> Any:
    host, port = app.smtp_address

    def run() -> Any:
        with smtplib.SMTP(host, port, timeout=10) as client:
            client.ehlo("client.test")
            return talk(client)

    return await asyncio.to_thread(run)


def _rcpts(sender: str, recipients: list[str]) -> Callable[[smtplib.SMTP], list[tuple[int, bytes]]]:
    def talk(client: smtplib.SMTP) -> list[tuple[int, bytes]]:
        assert client.mail(sender)[0] == 250
        return [client.rcpt(recipient) for recipient in recipients]

    return talk


async def test_recipients_per_hour_per_sender(
    tmp_path: Path, clock: FakeClock, log: Logger, records: Records
) -> None:
    config = _config(tmp_path, recipients_per_hour=3)
    async with _running(config, clock, log) as app:
        recipients = ["alice@postroom.test", "bob@postroom.test", "info@postroom.test", "carol@other.test"]
        replies = await _client(app, _rcpts("flood@remote.test", recipients))
        assert [code for code, _ in replies] == [250, 250, 250, 451]
        assert replies[3][1].startswith(b"4.7.1 Too many recipients from this sender in the last hour")
        # Another sender is not held back by it.
        assert (await _client(app, _rcpts("calm@remote.test", ["carol@other.test"])))[0][0] == 250

        def next_mail(client: smtplib.SMTP) -> tuple[int, bytes]:
            return client.mail("flood@remote.test")

        code, text = await _client(app, next_mail)  # the hour is full: refused at MAIL already
        assert (code, text[:5]) == (451, b"4.7.1")
        clock.now += 7200
        assert (await _client(app, _rcpts("flood@remote.test", ["carol@other.test"])))[0][0] == 250
    limited = records.events("policy.rate_limited")
    assert limited
    assert all(event["limit"] == "recipients_per_hour" for event in limited)


async def test_messages_per_connection(tmp_path: Path, clock: FakeClock, log: Logger) -> None:
    config = _config(tmp_path, messages_per_connection=2)
    async with _running(config, clock, log) as app:

        def talk(client: smtplib.SMTP) -> tuple[int, bytes]:
            for _ in range(2):
                client.sendmail("a@remote.test", ["alice@postroom.test"], MESSAGE)
            return client.mail("a@remote.test")

        code, text = await _client(app, talk)
        assert code == 421
        assert text == b"4.7.0 Too many messages in one connection, reconnect to send more"

        def one_more(client: smtplib.SMTP) -> dict[str, tuple[int, bytes]]:
            return client.sendmail("a@remote.test", ["alice@postroom.test"], MESSAGE)

        assert await _client(app, one_more) == {}  # a new connection may send again


async def test_connections_per_minute_per_ip(tmp_path: Path, clock: FakeClock, log: Logger) -> None:
    config = _config(tmp_path, connections_per_minute=2)
    async with _running(config, clock, log) as app:

        def noop(client: smtplib.SMTP) -> int:
            return client.noop()[0]

        assert [await _client(app, noop) for _ in range(2)] == [250, 250]
        with pytest.raises(smtplib.SMTPConnectError) as refused:
            await _client(app, noop)
        assert refused.value.smtp_code == 421
        error = typing.cast(bytes, refused.value.smtp_error)  # bytes at run time, whatever typeshed says
        assert error.startswith(b"4.7.0 Too many new connections from your address")
        clock.now += 120
        assert await _client(app, noop) == 250


async def test_greylisting_defers_the_first_attempt_and_accepts_the_retry(
    tmp_path: Path, clock: FakeClock, log: Logger, records: Records
) -> None:
    config = _config(tmp_path, greylist={"enabled": True, "delay": 300})
    async with _running(config, clock, log) as app:

        def send(client: smtplib.SMTP) -> tuple[int, bytes] | dict[str, tuple[int, bytes]]:
            try:
                return client.sendmail("news@remote.test", ["alice@postroom.test"], MESSAGE)
            except smtplib.SMTPRecipientsRefused as exc:
                return exc.recipients["alice@postroom.test"]

        code, text = await _client(app, send)
        assert code == 451
        assert text.startswith(b"4.7.1 Greylisted")
        assert b"try again later" in text
        clock.now += 60
        assert (await _client(app, send))[0] == 451  # too early
        clock.now += 241
        assert await _client(app, send) == {}  # queued
        assert await _client(app, send) == {}  # and remembered
    assert len(records.events("policy.greylisted")) == 2
    assert len(records.events("message.queued")) == 2


async def test_rate_counts_survive_a_restart(tmp_path: Path, clock: FakeClock, log: Logger) -> None:
    config = _config(tmp_path, recipients_per_hour=2)
    async with _running(config, clock, log) as app:
        replies = await _client(app, _rcpts("s@remote.test", ["alice@postroom.test", "bob@postroom.test"]))
        assert [code for code, _ in replies] == [250, 250]
    async with _running(config, clock, log) as app:

        def mail(client: smtplib.SMTP) -> tuple[int, bytes]:
            return client.mail("s@remote.test")

        code, text = await _client(app, mail)
        assert (code, text[:5]) == (451, b"4.7.1")
