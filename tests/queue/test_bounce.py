"""`postroom queue bounce ID`: the waiting recipients fail now, the sender gets a DSN through the normal
bounce path (queued from <> with the original headers), a recipient being delivered is left to it."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.helpers.server import make_config, quiet_queue

from postroom.config import Config
from postroom.queue import Envelope, Recipient
from postroom.queue.admin import Selection, open_queue_admin

BODY = b"Subject: stuck report\r\nFrom: alice@postroom.test\r\n\r\nbody\r\n"


def postroom(config: Config, config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def queue_messages(config: Config, *envelopes: Envelope, claim: tuple[int, int] | None = None) -> list[str]:
    """Queues messages with a real Queue; ``claim`` (message number, recipient idx) is left claimed, as by
    a delivery under way."""

    async def run() -> list[str]:
        queue = quiet_queue(config)
        await queue.start()
        try:
            ids = []
            for envelope in envelopes:
                writer = queue.open_spool()
                writer.write(BODY)
                ids.append(await queue.commit(writer, envelope))
            if claim is not None:
                due = queue.claim_due(limit=100)
                queue.release([d for d in due if (d.queue_id, d.idx) != (ids[claim[0]], claim[1])])
            return ids
        finally:
            await queue.stop()

    return asyncio.run(run())


def remote(*addresses: str) -> tuple[Recipient, ...]:
    return tuple(Recipient(a, a, "smtp") for a in addresses)


def config_file(tmp_path: Path) -> tuple[Config, Path]:
    config = make_config(tmp_path)
    path = tmp_path / "postroom.toml"
    path.write_text(
        f'hostname = "mx.postroom.test"\ndata_dir = "{config.data_dir}"\n'
        '[local]\ndomains = ["postroom.test"]\n'
    )
    return config, path


def log_lines(config: Config) -> list[dict[str, Any]]:
    return [json.loads(line) for line in config.log_file.read_text().splitlines()]


def test_bounce_fails_waiting_recipients_and_queues_a_dsn_to_the_sender(tmp_path: Path) -> None:
    config, path = config_file(tmp_path)
    envelope = Envelope(sender="alice@postroom.test", recipients=remote("bob@far.test", "carol@far.test"))
    (queue_id,) = queue_messages(config, envelope)
    result = postroom(config, path, "queue", "bounce", queue_id)
    assert result.returncode == 0, result.stderr
    assert f"{queue_id}: 2 recipient(s) failed, bounce queued to the sender" in result.stdout
    with open_queue_admin(database_path=config.database_path, queue_dir=config.queue_dir) as admin:
        (dsn,) = list(admin.messages(Selection()))
        assert (dsn.sender, [r.mailbox for r in dsn.recipients]) == ("", ["alice@postroom.test"])
        with admin.open_content(dsn) as content:
            report = content.read()
    assert b"multipart/report" in report
    assert b"Final-Recipient: rfc822;bob@far.test" in report.replace(b"; ", b";")
    assert b"Subject: stuck report" in report  # the original headers go with it
    events = [record["event"] for record in log_lines(config)]
    assert events.count("delivery.failed") == 2
    assert "delivery.bounced" in events
    assert "message.removed" in events


def test_bounce_leaves_a_recipient_being_delivered_to_its_delivery(tmp_path: Path) -> None:
    config, path = config_file(tmp_path)
    envelope = Envelope(sender="alice@postroom.test", recipients=remote("bob@far.test", "carol@far.test"))
    (queue_id,) = queue_messages(config, envelope, claim=(0, 1))
    result = postroom(config, path, "queue", "bounce", queue_id)
    assert result.returncode == 0, result.stderr
    assert "1 recipient(s) failed" in result.stdout
    assert "1 being delivered right now, left to that delivery" in result.stdout
    with open_queue_admin(database_path=config.database_path, queue_dir=config.queue_dir) as admin:
        original = admin.message(queue_id)
        assert [(r.address, r.state) for r in original.recipients] == [
            ("bob@far.test", "failed"),
            ("carol@far.test", "queued"),
        ]


def test_no_bounce_for_a_bounce_and_unknown_ids_change_nothing(tmp_path: Path) -> None:
    config, path = config_file(tmp_path)
    (kept, dsn) = queue_messages(
        config,
        Envelope(sender="alice@postroom.test", recipients=remote("bob@far.test")),
        Envelope(sender="", recipients=remote("someone@far.test")),
    )
    unknown = postroom(config, path, "queue", "bounce", kept, "0006123456789abc")
    assert unknown.returncode != 0
    assert unknown.stderr.strip() == "postroom: no message 0006123456789abc in the queue"
    result = postroom(config, path, "queue", "bounce", dsn)
    assert f"{dsn}: 1 recipient(s) failed, no bounce" in result.stdout
    with open_queue_admin(database_path=config.database_path, queue_dir=config.queue_dir) as admin:
        assert [view.queue_id for view in admin.messages()] == [kept]
