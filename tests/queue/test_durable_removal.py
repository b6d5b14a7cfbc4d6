"""A spool file goes only after the index change that removed its message is on disk; recovery's two cases."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers.peers import needs

import postroom
from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Outcome

from .conftest import FakeClock, Records, make_queue, put

CHILD = """
import asyncio, io, sys
from pathlib import Path
from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Envelope, Outcome, Queue, Recipient

async def main(root):
    queue = Queue(settings=QueueSettings(inline_max=0), queue_dir=root / "queue", database_path=root / "db",
                  log=Logger(stream=io.StringIO()))
    await queue.start()
    envelope = Envelope(sender="s@x", recipients=(Recipient("a@x", "a@x"),))
    writer = queue.open_spool()
    writer.write(b"Subject: hi\\r\\n\\r\\nhello\\r\\n")
    queue_id = await queue.commit(writer, envelope)
    (due,) = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, due.idx, "delivered", "ok")])
    assert not queue.spool_path(queue_id).exists()
    await queue.stop()
    print(queue_id)

asyncio.run(main(Path(sys.argv[1])))
"""

# strace pads the pid column (so short pids are followed by several spaces).
# strace -y lines: "1234 pwrite64(5</x/db-wal>, ...", "1234 unlink("/x/queue/spool/<id>") = 0",
# and, for calls another thread interrupted, "1234 fsync(5</x/db-wal> <unfinished ...>" then
# "1234 <... fsync resumed>) = 0".
_CALL = re.compile(r"^(\d+) +(\w+)\((?:\d+<([^>]*)>|\"([^\"]*)\"|AT_FDCWD, \"([^\"]*)\")?")
_RESUMED = re.compile(r"^(\d+) +<\.\.\. (\w+) resumed>")
_WRITES = {"pwrite64", "write", "pwritev", "writev"}
_SYNCS = {"fsync", "fdatasync"}


def _unsynced_wal_at_unlink(trace: str, spool_file: str) -> list[bool]:
    """For each unlink of ``spool_file``: was something written to the WAL and not fsynced yet?"""
    dirty = False
    pending: dict[str, str] = {}  # pid -> the WAL sync it has started and not finished
    found: list[bool] = []
    for line in trace.splitlines():
        if resumed := _RESUMED.match(line):
            if pending.pop(resumed.group(1), None) == resumed.group(2) and " = 0" in line:
                dirty = False
            continue
        call = _CALL.match(line)
        if call is None:
            continue
        pid, name = call.group(1), call.group(2)
        target = call.group(3) or call.group(4) or call.group(5) or ""
        if target.endswith("-wal") and name in _WRITES:
            dirty = True
        elif target.endswith("-wal") and name in _SYNCS:
            if "<unfinished" in line:
                pending[pid] = name
            elif " = 0" in line:
                dirty = False
        elif name in {"unlink", "unlinkat"} and target == spool_file:
            found.append(dirty)
    return found


@needs("strace")
def test_spool_file_is_unlinked_only_after_the_wal_holding_its_removal_is_fsynced(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace"
    env = {**os.environ, "PYTHONPATH": str(Path(postroom.__file__).parents[1])}
    command = [
        "strace", "-f", "-y", "-qq", "-e", "signal=none", "-o", str(trace_file),
        "-e", "trace=pwrite64,write,pwritev,writev,fsync,fdatasync,unlink,unlinkat",
        sys.executable, "-c", CHILD, str(tmp_path),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 and "ptrace" in done.stderr:
        pytest.skip(f"strace cannot trace here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    queue_id = done.stdout.strip()
    spool_file = str((tmp_path / "queue" / "spool" / queue_id).resolve())
    assert _unsynced_wal_at_unlink(trace_file.read_text(), spool_file) == [False]


async def test_a_lost_removal_brings_back_a_row_without_its_file_and_recovery_says_so(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger, records: Records
) -> None:
    """What a power cut did before files waited for the removal's fsync: the commit lost, the unlink kept.
    Simulated for real: the database files as they were before the record commit come back."""
    database = tmp_path / "postroom.db"
    queue = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await queue.start()
    queue_id = await put(queue)
    await queue.stop()  # the last close checkpoints the WAL into the database file
    shutil.copyfile(database, tmp_path / "before-record.db")

    queue = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await queue.start()
    (due,) = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, due.idx, "delivered", "ok")])
    assert not queue.spool_path(queue_id).exists()
    await queue.stop()

    for leftover in (tmp_path / "postroom.db-wal", tmp_path / "postroom.db-shm"):
        leftover.unlink(missing_ok=True)
    shutil.copyfile(tmp_path / "before-record.db", database)
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await again.start()
    try:
        assert again.message_count() == 1
        warnings = records.events("queue.spool_missing")
        assert [(w["queue_id"], w["missing"]) for w in warnings] == [(queue_id, 1)]
    finally:
        await again.stop()


async def test_recovery_keeps_files_with_rows_and_reports_no_missing_ones(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger, records: Records
) -> None:
    queue = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await queue.start()
    kept = await put(queue)
    finished = await put(queue)
    (due,) = [d for d in queue.claim_due(limit=10) if d.queue_id == finished]
    queue.record([Outcome(finished, due.idx, "delivered", "ok")])
    await queue.stop()
    # the removal was committed, then a crash came before the unlink
    (tmp_path / "queue" / "spool" / finished).write_bytes(b"Subject: hi\r\n\r\nhello\r\n")
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await again.start()
    try:
        assert sorted(p.name for p in (tmp_path / "queue" / "spool").iterdir()) == [kept]
        assert records.events("queue.spool_missing") == []
        assert records.events("queue.recovered")[-1]["removed_spool"] == 1
    finally:
        await again.stop()
