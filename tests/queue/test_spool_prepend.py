"""SpoolWriter.prepend and head: a header on top after the body is in, in memory or by rewriting the file."""

from __future__ import annotations

from pathlib import Path

from postroom.queue.spool import SpoolWriter

QUEUE_ID = "0123456789abcdef"


def writer(tmp_path: Path, inline_max: int) -> SpoolWriter:
    incoming = tmp_path / "incoming"
    incoming.mkdir(exist_ok=True)
    return SpoolWriter(queue_id=QUEUE_ID, incoming_dir=incoming, inline_max=inline_max)


def test_prepend_to_an_inline_body_stays_in_memory(tmp_path: Path) -> None:
    spool = writer(tmp_path, inline_max=1000)
    spool.write(b"Received: x\r\n\r\nbody\r\n")
    assert spool.head(8) == b"Received"
    spool.prepend(b"Authentication-Results: a; none\r\n")
    assert spool.inline_body == b"Authentication-Results: a; none\r\nReceived: x\r\n\r\nbody\r\n"
    assert spool.size == len(spool.inline_body)
    assert list((tmp_path / "incoming").iterdir()) == []


def test_prepend_to_a_spilled_body_rewrites_one_new_incoming_file(tmp_path: Path) -> None:
    spool = writer(tmp_path, inline_max=10)
    body = b"Received: x\r\n\r\n" + b"line of body\r\n" * 10_000
    for start in range(0, len(body), 4096):
        spool.write(body[start : start + 4096])
    assert spool.spilled
    assert spool.head(100) == body[:100]
    spool.prepend(b"X-First: 1\r\n")
    spool.prepend(b"X-Zeroth: 0\r\n")
    files = list((tmp_path / "incoming").iterdir())
    assert [file.name.startswith(QUEUE_ID) for file in files] == [True]
    spool.seal()
    final = tmp_path / "spool" / QUEUE_ID
    final.parent.mkdir()
    spool.make_durable(final)
    assert final.read_bytes() == b"X-Zeroth: 0\r\nX-First: 1\r\n" + body
    assert spool.size == final.stat().st_size
    assert list((tmp_path / "incoming").iterdir()) == []


def test_abort_after_prepend_leaves_no_file(tmp_path: Path) -> None:
    spool = writer(tmp_path, inline_max=10)
    spool.write(b"x" * 100)
    spool.prepend(b"H: v\r\n")
    spool.abort()
    assert list((tmp_path / "incoming").iterdir()) == []
