"""`postroom queue ...` as an operator runs it: a second process on the data folder, also while the server
runs. Messages are queued by a real Queue (or by a real server over SMTP)."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import smtplib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from postroom.app import open_accounts
from postroom.cli.queue import format_age
from postroom.config import Config
from postroom.queue import Envelope, Outcome, Recipient
from tests.helpers.server import quiet_queue, serve_process, wait_for, write_config

BODY = b"Subject: quarterly report\r\nFrom: sender@example.test\r\n\r\nthe secret body\r\n"
UNKNOWN = "0006123456789abc"


def postroom(config_file: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), *args],
        cwd=config_file.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def listed(config_file: Path, *args: str) -> list[dict[str, Any]]:
    result = postroom(config_file, "queue", "list", "--json", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines()]


def fill_queue(
    config: Config,
    *messages: tuple[str, tuple[str, ...]],
    defer_first: bool = False,
    mailbox_form: bool = False,
) -> list[str]:
    """Queues (sender, recipients) messages with a real Queue, as a server would; the first one's first
    recipient can be given a failed attempt. Returns the queue ids."""

    async def run() -> list[str]:
        queue = quiet_queue(config)
        await queue.start()
        try:
            ids = []
            for sender, recipients in messages:
                envelope = Envelope(
                    sender=sender, recipients=tuple(Recipient(r, r.lower()) for r in recipients)
                )
                # as a session opens it: in a mailbox's form when it is for one local mailbox (local_form.py)
                chosen = envelope.recipients if mailbox_form else ()
                writer = queue.open_spool(sender=sender, recipients=chosen)
                writer.write(BODY)
                ids.append(await queue.commit(writer, envelope))
            if defer_first:
                due = queue.claim_due(limit=100)
                queue.release([d for d in due if (d.queue_id, d.idx) != (ids[0], 0)])
                queue.record([Outcome(ids[0], 0, "temporary", "Not a directory (ENOTDIR)")])
            return ids
        finally:
            await queue.stop()

    return asyncio.run(run())


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Config, Path]:
    return write_config(tmp_path, queue={"inline_max": 0})


def test_empty_queue_says_so_exit_0(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    fill_queue(config)
    result = postroom(config_file, "queue", "list")
    assert (result.returncode, result.stdout, result.stderr) == (0, "Mail queue is empty\n", "")
    assert postroom(config_file, "queue", "list", "--json").stdout == ""


def test_list_shows_one_block_per_message_and_a_summary(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    first, second = fill_queue(
        config,
        ("sender@example.test", ("alice@postroom.test", "bob@other.test")),
        ("", ("carol@postroom.test",)),
        defer_first=True,
    )
    result = postroom(config_file, "queue", "list")
    assert result.returncode == 0, result.stderr
    blocks = result.stdout.split("\n\n")
    assert blocks[0].splitlines()[0].startswith(first)
    assert blocks[0].splitlines()[0].endswith("<sender@example.test>")
    assert "deferred  <alice@postroom.test>  (1 attempt, next in " in blocks[0]
    assert "Not a directory (ENOTDIR)" in blocks[0]
    assert "queued    <bob@other.test>" in blocks[0]
    assert blocks[1].splitlines()[0].startswith(second)
    assert blocks[1].splitlines()[0].endswith("<>")
    assert blocks[-1] == "2 messages, 3 recipients, 1 KiB\n"


def test_list_json_is_one_object_per_message(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    first, _ = fill_queue(
        config,
        ("s@example.test", ("alice@postroom.test",)),
        ("s@example.test", ("bob@postroom.test",)),
        defer_first=True,
    )
    one, two = listed(config_file)
    assert set(one) == {"queue_id", "arrival_time", "message_size", "sender", "held", "recipients"}
    assert (one["queue_id"], one["message_size"], one["sender"], one["held"]) == (
        first,
        len(BODY),
        "s@example.test",
        False,
    )
    (recipient,) = one["recipients"]
    assert set(recipient) == {
        "address", "mailbox", "state", "attempts", "next_attempt_at", "last_error", "claimed_until"
    }
    assert (recipient["state"], recipient["attempts"], recipient["last_error"]) == (
        "deferred",
        1,
        "Not a directory (ENOTDIR)",
    )
    assert isinstance(recipient["next_attempt_at"], int)
    assert two["recipients"][0]["state"] == "queued"
    assert [m["queue_id"] for m in listed(config_file, "--state", "deferred")] == [first]
    assert [m["queue_id"] for m in listed(config_file, "--recipient", "BOB@postroom.test")] == [
        two["queue_id"]
    ]
    assert listed(config_file, "--domain", "elsewhere.test") == []
    assert (
        postroom(config_file, "queue", "list", "--sender", "x@y.test").stdout
        == "No message in the queue matches\n"
    )


def test_show_prints_envelope_and_headers_but_not_the_body(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    (queue_id,) = fill_queue(config, ("sender@example.test", ("alice@postroom.test",)), defer_first=True)
    result = postroom(config_file, "queue", "show", queue_id.upper())
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"Queue ID:   {queue_id}\n" in out
    assert "Sender:     <sender@example.test>\n" in out
    assert "  <alice@postroom.test>\n    state: deferred, attempts: 1\n" in out
    assert "    last error: Not a directory (ENOTDIR)\n" in out
    assert out.endswith("Headers:\nSubject: quarterly report\nFrom: sender@example.test\n")
    assert "secret body" not in out
    with_body = postroom(config_file, "queue", "show", queue_id, "--body")
    assert with_body.stdout.endswith("Message:\n" + BODY.decode().replace("\r\n", "\n"))  # text mode
    raw = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "queue", "show", queue_id, "--raw"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert raw.stdout == BODY


@pytest.mark.parametrize("action", ["show", "retry", "hold", "release", "delete"])
def test_unknown_and_malformed_ids_are_one_line_exit_1(setup: tuple[Config, Path], action: str) -> None:
    config, config_file = setup
    fill_queue(config, ("s@example.test", ("alice@postroom.test",)))
    unknown = postroom(config_file, "queue", action, UNKNOWN)
    assert (unknown.returncode, unknown.stdout, unknown.stderr) == (
        1,
        "",
        f"postroom: no message {UNKNOWN} in the queue\n",
    )
    malformed = postroom(config_file, "queue", action, "12345")
    assert malformed.returncode == 1
    assert malformed.stderr == "postroom: '12345' is not a queue id (16 hex digits, as in 'queued as ...')\n"


def test_commands_without_a_target_or_a_database_are_one_line_exit_1(
    setup: tuple[Config, Path], tmp_path: Path
) -> None:
    config, config_file = setup
    no_database = postroom(config_file, "queue", "list")
    assert no_database.returncode == 1
    assert no_database.stderr.startswith("postroom: no queue database at ")
    assert no_database.stderr.count("\n") == 1
    fill_queue(config)
    for action in ("delete", "hold", "release", "retry"):
        result = postroom(config_file, "queue", action)
        assert result.returncode == 1
        assert result.stderr.startswith(f"postroom: {action}: give a queue id or --all")
        assert result.stderr.count("\n") == 1


def test_hold_release_retry_delete_flush(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    first, second, third = fill_queue(
        config,
        ("s@example.test", ("alice@postroom.test",)),
        ("s@example.test", ("bob@postroom.test",)),
        ("spam@example.test", ("carol@postroom.test", "dave@postroom.test")),
        defer_first=True,
    )
    assert postroom(config_file, "queue", "hold", first).stdout == "held 1 message\n"
    assert postroom(config_file, "queue", "hold", first).stdout == "held 0 messages (1 already held)\n"
    assert [m["held"] for m in listed(config_file)] == [True, False, False]
    assert postroom(config_file, "queue", "retry", first).stdout.startswith("nothing to retry")
    assert postroom(config_file, "queue", "release", first).stdout == "released 1 message\n"
    assert postroom(config_file, "queue", "retry", first).stdout == (
        "1 recipient due now; the server tries it within 0.2s (its poll interval)\n"
    )
    (deferred,) = listed(config_file, "--state", "deferred")
    assert deferred["recipients"][0]["next_attempt_at"] <= deferred["arrival_time"] + 60
    assert postroom(config_file, "queue", "flush").stdout.startswith("4 recipients due now")
    spam = postroom(config_file, "queue", "delete", "--all", "--sender", "<SPAM@example.test>")
    assert spam.stdout == "deleted 1 message\n"
    assert not (config.queue_dir / "spool" / third).exists()
    assert [m["queue_id"] for m in listed(config_file)] == [first, second]
    assert postroom(config_file, "queue", "delete", first, second).stdout == "deleted 2 messages\n"
    assert postroom(config_file, "queue", "list").stdout == "Mail queue is empty\n"


def test_format_age_uses_the_largest_whole_unit() -> None:
    assert [format_age(s) for s in (0, 59, 60, 3599, 3600, 86400 * 3 + 5)] == [
        "0s",
        "59s",
        "1m",
        "59m",
        "1h",
        "3d",
    ]


# --- against a running server ----------------------------------------------------------------------------


def send(address: tuple[str, int], recipient: str, subject: str) -> None:
    with smtplib.SMTP(*address, timeout=30) as client:
        client.sendmail("sender@example.test", [recipient], f"Subject: {subject}\r\n\r\nhello\r\n")


def test_queue_commands_on_the_data_folder_of_a_running_server(tmp_path: Path) -> None:
    config, config_file = write_config(tmp_path, queue={"retry_schedule": [30]})
    accounts, db = open_accounts(config)
    try:
        accounts.add_mailbox("alice@postroom.test")
        accounts.add_mailbox("bob@postroom.test")
    finally:
        db.close()
    blocked = config.mailboxes_dir / "postroom.test" / "alice"
    blocked.parent.mkdir(parents=True)
    blocked.write_text("a file where alice's Maildir should be\n")  # every delivery to alice defers
    with serve_process(config_file) as server:
        send(server.address, "alice@postroom.test", "stuck")

        def deferred() -> dict[str, Any] | None:
            for message in listed(config_file, "--state", "deferred"):
                return message
            return None

        message = wait_for(deferred, timeout=20, what="the message to alice to be deferred")
        (recipient,) = message["recipients"]
        assert (recipient["address"], recipient["attempts"]) == ("alice@postroom.test", 1)
        assert "Not a directory" in recipient["last_error"]
        human = postroom(config_file, "queue", "list")
        assert "deferred  <alice@postroom.test>" in human.stdout
        assert "Not a directory (ENOTDIR)" in human.stdout

        queue_id = message["queue_id"]
        retried = postroom(config_file, "queue", "retry", queue_id)
        assert retried.stdout.startswith("1 recipient due now")

        def tried_again() -> bool:
            (again,) = listed(config_file)
            return bool(again["recipients"][0]["attempts"] >= 2)

        wait_for(tried_again, timeout=20, what="the server to try alice again")
        assert postroom(config_file, "queue", "hold", queue_id).stdout == "held 1 message\n"
        assert postroom(config_file, "queue", "retry", queue_id).stdout.startswith("nothing to retry")

        deleted = postroom(config_file, "queue", "delete", queue_id)
        assert (deleted.returncode, deleted.stdout) == (0, "deleted 1 message\n")
        assert listed(config_file) == []

        send(server.address, "bob@postroom.test", "after the delete")  # the server goes on as before
        bob = config.mailboxes_dir / "postroom.test" / "bob" / "new"
        wait_for(lambda: bob.is_dir() and any(bob.iterdir()), timeout=20, what="delivery to bob")
        assert server.process.poll() is None
        assert server.terminate() == 0
    assert "Traceback" not in "".join(server.output)


def test_a_bulk_change_shows_its_progress_on_a_terminal_only(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    fill_queue(config, *[("a@example.test", ("b@example.test",))] * 3)
    # stderr on a terminal (a pseudo-terminal here): rich draws a live count there, stdout keeps the summary
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "postroom", "-c", str(config_file), "queue", "hold", "--all"],
            cwd=config_file.parent,
            stdout=subprocess.PIPE,
            stderr=terminal,
            timeout=60,
            check=False,
        )
        os.close(terminal)
        terminal = -1
        drawn = b""
        while select.select([controller], [], [], 0.5)[0]:
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # EIO: the terminal's other side is closed and drained
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(controller)
        if terminal >= 0:
            os.close(terminal)
    assert result.returncode == 0
    assert result.stdout.decode() == "held 3 messages\n"
    assert b"messages held: 3" in drawn
    # not a terminal: no progress at all
    released = postroom(config_file, "queue", "release", "--all")
    assert (released.stdout, released.stderr) == ("released 3 messages\n", "")


def test_show_raw_gives_a_mailbox_form_spool_file_back_as_received(setup: tuple[Config, Path]) -> None:
    config, config_file = setup
    (queue_id,) = fill_queue(config, ("a@example.test", ("bob@postroom.test",)), mailbox_form=True)
    stored = config.queue_dir.joinpath("spool", queue_id).read_bytes()
    assert stored.startswith(b"Return-Path: <a@example.test>\n")
    raw = subprocess.run(
        [sys.executable, "-m", "postroom", "-c", str(config_file), "queue", "show", queue_id, "--raw"],
        cwd=config_file.parent, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert raw.stdout == BODY
