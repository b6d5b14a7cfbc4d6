"""SIGHUP / `postroom reload` reads the config file again: new connections get the new settings, open sessions
finish on theirs, the process keeps its pid; an invalid file is logged and changes nothing."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from postroom.app import running_app
from postroom.config import Config
from postroom.observe.log import Logger
from tests.helpers.fakes import Records
from tests.helpers.server import (
    ServeProcess,
    maildir_messages,
    make_config,
    serve_process,
    wait_for,
    write_config,
)

BIG = b"Subject: big\r\n\r\n" + (b"y" * 78 + b"\r\n") * 60  # about 4.8 kB


def _events(config: Config, name: str) -> list[dict[str, Any]]:
    """The lines of the server's JSON log file with event ``name``, but the delivery process's (which
    reloads too, [delivery] own_process): what the SMTP side says."""
    if not config.log_file.exists():
        return []
    lines = [json.loads(line) for line in config.log_file.read_text().splitlines() if line.strip()]
    return [line for line in lines if line["event"] == name and line.get("role") != "delivery"]


def _reload(config_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "reload"],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def _reloaded(config: Config, served: ServeProcess, event: str, count: int) -> dict[str, Any]:
    """Wait for the ``count``-th line of ``event``; the server is still the same process."""
    found = wait_for(lambda: len(_events(config, event)) >= count and _events(config, event), what=event)
    assert served.process.poll() is None
    return found[count - 1]  # type: ignore[no-any-return]


def test_reload_applies_the_new_file_to_new_connections_only(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path)
    with serve_process(config_file) as served:
        pid = served.process.pid
        assert (config.data_dir / "postroom.pid").read_text().strip() == str(pid)
        with smtplib.SMTP(*served.address, timeout=10) as open_session:
            open_session.ehlo()
            assert int(open_session.esmtp_features["size"]) == config.smtp.max_message_size
            write_config(
                tmp_path,
                smtp={"max_message_size": 2000},
                policy={"deny": ["127.0.0.1"]},
                local={"domains": ["postroom.test", "other.test", "new.test"]},
            )
            result = _reload(config_file)
            assert result.returncode == 0, result.stderr
            assert "the outcome is in its log" in result.stdout
            line = _reloaded(config, served, "config.reloaded", 1)
            assert line["changed"] == "smtp.max_message_size,local.domains,policy.deny"
            assert not _events(config, "config.restart_needed")

            with pytest.raises(smtplib.SMTPConnectError) as refused:
                smtplib.SMTP(*served.address, timeout=10)
            assert refused.value.smtp_code == 554
            assert b"5.7.1" in refused.value.smtp_error

            # The session opened before the reload still has the old size limit and is not refused.
            open_session.sendmail("a@example.test", ["postmaster@postroom.test"], BIG)

        write_config(  # the deny entry goes; the size and the new domain stay
            tmp_path,
            smtp={"max_message_size": 2000},
            local={"domains": ["postroom.test", "other.test", "new.test"]},
        )
        os.kill(pid, signal.SIGHUP)  # what `postroom reload` sends, as systemd's ExecReload would
        line = _reloaded(config, served, "config.reloaded", 2)
        assert line["changed"] == "policy.deny"
        with smtplib.SMTP(*served.address, timeout=10) as client:
            client.ehlo()
            assert int(client.esmtp_features["size"]) == 2000
            with pytest.raises(smtplib.SMTPSenderRefused) as too_big:
                client.sendmail("a@example.test", ["postmaster@postroom.test"], BIG)
            assert too_big.value.smtp_code == 552
            client.rset()
            client.sendmail("a@example.test", ["postmaster@new.test"], b"Subject: new\r\n\r\nhello\r\n")
        wait_for(lambda: maildir_messages(config, "postmaster@new.test"), what="delivery to the new domain")
        wait_for(
            lambda: maildir_messages(config, "postmaster@postroom.test"), what="the big one, from before"
        )
        assert (config.data_dir / "postroom.pid").read_text().strip() == str(pid)  # the same process
        assert served.terminate() == 0


def test_an_invalid_file_is_logged_and_the_config_in_use_stays(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, smtp={"max_message_size": 3000})
    with serve_process(config_file) as served:
        config_file.write_text(config_file.read_text().replace("max_message_size", "max_mesage_size"))
        result = _reload(config_file)  # the command reads the file too, and says what is wrong at once
        assert result.returncode == 2
        assert "smtp.max_mesage_size: unknown key" in result.stderr
        os.kill(served.process.pid, signal.SIGHUP)  # a plain kill -HUP: the server itself says it
        failed = _reloaded(config, served, "config.reload_failed", 1)
        assert failed["level"] == "error"
        assert failed["error"] == "smtp.max_mesage_size: unknown key"
        assert not _events(config, "config.reloaded")
        with smtplib.SMTP(*served.address, timeout=10) as client:
            client.ehlo()
            assert int(client.esmtp_features["size"]) == 3000

        write_config(tmp_path, smtp={"listen": "127.0.0.1:25", "max_message_size": 1500})
        result = _reload(config_file)
        assert result.returncode == 0, result.stderr
        restart = _reloaded(config, served, "config.restart_needed", 1)
        assert restart["level"] == "warning"
        assert restart["keys"] == "smtp.listen"
        assert _events(config, "config.reloaded")[0]["changed"] == "smtp.max_message_size"
        with smtplib.SMTP(*served.address, timeout=10) as client:  # still where it was
            client.ehlo()
            assert int(client.esmtp_features["size"]) == 1500
        assert served.terminate() == 0


async def test_rates_greylisting_and_the_log_level_change_at_once(tmp_path: Path, records: Records) -> None:
    """In-process (App.reload is what SIGHUP calls): the loader stands in for the file."""
    before = make_config(tmp_path, limits={"exempt_networks": []})
    after = make_config(
        tmp_path,
        limits={"exempt_networks": []},
        greylist={"enabled": True},
        smtp={"max_connections_per_ip": 1},
        log={"level": "warning"},
    )
    current = [before]
    stream = io.StringIO()
    log = Logger(stream=stream, level="info")
    log.add_listener(records.append)
    async with running_app(before, log=log, config_loader=lambda: current[0]) as app:
        address = app.smtp_address

        def rcpt() -> tuple[int, bytes]:
            with smtplib.SMTP(*address, timeout=10) as client:
                client.ehlo("client.test")
                assert client.mail("news@remote.test")[0] == 250
                return client.rcpt("postmaster@postroom.test")

        def second_connection_while_one_is_open() -> int:
            with smtplib.SMTP(*address, timeout=10) as first:
                assert first.noop()[0] == 250
                try:
                    with smtplib.SMTP(*address, timeout=10) as second:
                        return second.noop()[0]
                except smtplib.SMTPConnectError as exc:
                    return exc.smtp_code

        assert (await asyncio.to_thread(rcpt))[0] == 250
        assert await asyncio.to_thread(second_connection_while_one_is_open) == 250
        current[0] = after
        app.reload()
        assert records.events("config.reloaded")[0]["changed"] == (
            "smtp.max_connections_per_ip,log.level,greylist.enabled"
        )
        code, text = await asyncio.to_thread(rcpt)
        assert (code, text[:5]) == (451, b"4.7.1")
        assert await asyncio.to_thread(second_connection_while_one_is_open) == 421
        app.reload()  # the same file again: nothing changes, and at warning level nothing is written
        assert records.events("config.reloaded")[1]["changed"] == "none"
    written = stream.getvalue()
    assert "server.started" in written
    assert "config.reloaded" not in written  # info lines, below the new level
    assert "policy.greylisted" not in written


async def test_sender_auth_flags_reach_new_sessions_only(tmp_path: Path, log: Logger) -> None:
    sender_auth = {"enabled": True, "exempt_networks": []}
    before = make_config(tmp_path, sender_auth=sender_auth)
    after = make_config(tmp_path, sender_auth={**sender_auth, "reject_ehlo_impersonation": True})
    async with running_app(before, log=log, config_loader=lambda: after) as app:
        address = app.smtp_address

        def mail(client: smtplib.SMTP) -> int:
            code = client.mail("a@remote.test")[0]
            client.rset()
            return code

        def connect() -> smtplib.SMTP:
            client = smtplib.SMTP(*address, timeout=10)
            client.ehlo("mx.postroom.test")  # our own name: impersonation
            return client

        open_session = await asyncio.to_thread(connect)
        try:
            assert await asyncio.to_thread(mail, open_session) == 250
            app.reload()
            assert await asyncio.to_thread(mail, open_session) == 250  # started before: old flags
            new_session = await asyncio.to_thread(connect)
            try:
                assert await asyncio.to_thread(mail, new_session) == 550
            finally:
                await asyncio.to_thread(new_session.quit)
        finally:
            await asyncio.to_thread(open_session.quit)
