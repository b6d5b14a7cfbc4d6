"""SpoolWriter and queue ids: streaming to incoming/, abort, ids that sort by time."""

from __future__ import annotations

from pathlib import Path

import pytest

from postroom.queue import Queue
from postroom.queue.spool import Spool


def test_queue_ids_are_unique_sortable_and_file_safe(tmp_path: Path) -> None:
    spool = Spool(queue_dir=tmp_path, clock=lambda: 1_700_000_000.0)  # a frozen clock
    ids = [spool.new_queue_id() for _ in range(1000)]
    assert len(set(ids)) == 1000
    assert [i[:13] for i in ids] == sorted(i[:13] for i in ids)
    assert all(len(i) == 16 and i.isalnum() and i == i.lower() for i in ids)


def test_later_ids_sort_after_earlier_ones(tmp_path: Path) -> None:
    now = [1_700_000_000.0]
    spool = Spool(queue_dir=tmp_path, clock=lambda: now[0])
    first = spool.new_queue_id()
    now[0] += 0.001
    assert spool.new_queue_id() > first


def test_spool_path_refuses_anything_but_a_queue_id(tmp_path: Path) -> None:
    spool = Spool(queue_dir=tmp_path, clock=lambda: 0.0)
    for bad in ("../etc/passwd", "", "0123456789abcdeF", "0123456789abcdef0"):
        with pytest.raises(ValueError, match="queue id"):
            spool.path(bad)
    assert spool.path("0123456789abcdef") == tmp_path / "spool" / "0123456789abcdef"


async def test_writes_stream_to_an_incoming_file_and_count_bytes(queue: Queue, tmp_path: Path) -> None:
    writer = queue.open_spool()
    for _ in range(1000):
        writer.write(b"x" * 99 + b"\n")
    assert writer.size == 100_000
    incoming = tmp_path / "queue" / "incoming" / writer.queue_id
    assert incoming.exists()
    writer.abort()


async def test_abort_removes_the_file_and_is_idempotent(queue: Queue, tmp_path: Path) -> None:
    writer = queue.open_spool()
    writer.write(b"data")
    writer.abort()
    writer.abort()
    assert not (tmp_path / "queue" / "incoming" / writer.queue_id).exists()
    with pytest.raises(RuntimeError):
        writer.write(b"more")
