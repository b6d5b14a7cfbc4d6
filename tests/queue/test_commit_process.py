"""A running Queue with ``commit_process = true``: messages made durable by the child process
(commit_process.py and committer.py together), what happens when the child dies, and how it ends."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.helpers.processes import alive, children

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Queue, QueueError
from postroom.queue.index import Index
from postroom.store.sqlite import open_database

from .conftest import FakeClock, Records, envelope, make_queue, put

COMMITTER = "postroom.queue.committer"
BIG = b"Subject: big\r\n\r\n" + b"a line of a body that needs a spool file\r\n" * 1000  # ~42 KiB
SMALL = b"Subject: small\r\n\r\nhello\r\n"
_WAIT = 30.0  # seconds any wait here takes at most


def _settings(inline_max: int) -> QueueSettings:
    return QueueSettings(
        retry_schedule=(60.0, 300.0),
        max_lifetime=3600.0,
        claim_lease=600.0,
        inline_max=inline_max,
        commit_process=True,
    )


@pytest.fixture(params=[0, QueueSettings().inline_max], ids=["all-spooled", "default-inline-max"])
def settings(request: pytest.FixtureRequest) -> QueueSettings:
    return _settings(request.param)


def committer_pid() -> int:
    """The one commit process of the running Queue (a child of this test process)."""
    (pid,) = children(os.getpid(), COMMITTER)
    return pid


async def started_queue(tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger) -> Queue:
    """A queue with its commit process running, for a test that stops it itself."""
    queue = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await queue.start()
    return queue


async def new_committer(old: int) -> int:
    """Waits (bounded) until a commit process other than ``old`` runs."""
    for _ in range(int(_WAIT / 0.05)):
        found = [pid for pid in children(os.getpid(), COMMITTER) if pid != old]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"no new commit process within {_WAIT} s")


async def put_when_running(queue: Queue, body: bytes) -> str:
    """Commits ``body``, retrying while the queue refuses (a commit process being restarted); bounded."""
    for _ in range(int(_WAIT / 0.05)):
        try:
            return await put(queue, body)
        except QueueError:
            await asyncio.sleep(0.05)
    raise AssertionError(f"no commit succeeded within {_WAIT} s")


async def put_until_refused(queue: Queue) -> None:
    """Commits until one raises QueueError (the loss of the process is seen once its socket reports
    closed, in a turn of the loop to come); bounded."""
    for _ in range(int(_WAIT / 0.01)):
        await put(queue)
        await asyncio.sleep(0.01)
    raise AssertionError(f"every commit succeeded for {_WAIT} s")


@contextlib.contextmanager
def stopped(pid: int) -> Iterator[None]:
    """The process is frozen (SIGSTOP) inside: requests pile up in its socket, unanswered."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


def rows(tmp_path: Path) -> tuple[set[str], set[str]]:
    """All queue ids in the index, and those whose body is in a spool file."""
    conn = open_database(tmp_path / "postroom.db", readonly=True)
    try:
        return Index(conn).known_ids(), Index(conn).spooled_ids()
    finally:
        conn.close()


def files(tmp_path: Path, folder: str) -> set[str]:
    return {path.name for path in (tmp_path / "queue" / folder).iterdir()}


@pytest.fixture
async def restarted() -> AsyncIterator[list[Queue]]:
    """Queues a test starts again on the same folders; stopped at the end."""
    started: list[Queue] = []
    yield started
    for queue in started:
        await queue.stop()


# --- committing -----------------------------------------------------------------------------------------


async def test_spooled_and_inline_messages_commit_with_their_exact_bytes(
    queue: Queue, tmp_path: Path, settings: QueueSettings
) -> None:
    big = await put(queue, BIG, "a@example.test", "b@example.test")
    small = await put(queue, SMALL)
    assert queue.spool_path(big).read_bytes() == BIG
    assert queue.spool_path(small).exists() == (settings.inline_max == 0)
    if settings.inline_max == 0:
        assert queue.spool_path(small).read_bytes() == SMALL
    assert queue.message_count() == 2
    known, spooled = rows(tmp_path)
    assert known == {big, small}
    assert spooled == ({big, small} if settings.inline_max == 0 else {big})
    assert files(tmp_path, "incoming") == set()
    due = {(d.queue_id, d.idx): d for d in queue.claim_due(limit=10)}
    assert sorted(due) == sorted([(big, 0), (big, 1), (small, 0)])
    assert due[(small, 0)].body == (SMALL if settings.inline_max else None)


async def test_a_committed_message_survives_a_restart(
    queue: Queue, tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    queue_id = await put(queue, BIG)
    await queue.stop()
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await again.start()
    try:
        assert again.message_count() == 1
        assert again.spool_path(queue_id).read_bytes() == BIG
    finally:
        await again.stop()


async def test_stats_count_batches_and_messages(queue: Queue) -> None:
    assert (queue.commit_stats().batches, queue.commit_stats().messages) == (0, 0)
    await put(queue, BIG)
    await put(queue, SMALL)
    stats = queue.commit_stats()
    assert (stats.batches, stats.messages, stats.largest_batch) == (2, 2, 1)


async def test_fifty_concurrent_commits_share_batches(queue: Queue, tmp_path: Path) -> None:
    bodies = [b"Subject: %d\r\n\r\nmessage %d\r\n" % (n, n) for n in range(50)]
    ids = await asyncio.gather(*(put(queue, body) for body in bodies))
    assert len(set(ids)) == 50
    stats = queue.commit_stats()
    assert stats.messages == 50
    assert stats.largest_batch > 1
    assert stats.batches < 50
    assert queue.message_count() == 50
    assert rows(tmp_path)[0] == set(ids)
    due = {d.queue_id: d for d in queue.claim_due(limit=100)}
    for queue_id, body in zip(ids, bodies, strict=True):
        stored = due[queue_id].body
        assert (stored if stored is not None else queue.spool_path(queue_id).read_bytes()) == body


async def test_a_refused_message_fails_alone_and_leaves_nothing(
    queue: Queue, tmp_path: Path, records: Records
) -> None:
    """A spool file name taken already (another process on this queue_dir): that message gets 451."""
    writers = [queue.open_spool() for _ in range(3)]
    for n, writer in enumerate(writers):
        writer.write(BIG + b"%d\r\n" % n)
    clash = writers[1]
    (tmp_path / "queue" / "spool" / clash.queue_id).write_bytes(b"not ours\r\n")
    results = await asyncio.gather(
        *(queue.commit(writer, envelope()) for writer in writers), return_exceptions=True
    )
    assert results[0] == writers[0].queue_id
    assert results[2] == writers[2].queue_id
    assert isinstance(results[1], QueueError)
    assert queue.spool_path(clash.queue_id).read_bytes() == b"not ours\r\n"
    assert files(tmp_path, "incoming") == set()
    assert rows(tmp_path)[0] == {writers[0].queue_id, writers[2].queue_id}
    (failed,) = records.events("queue.commit_failed")
    assert failed["queue_id"] == clash.queue_id


# --- the commit process dies ----------------------------------------------------------------------------


async def test_a_killed_process_fails_waiting_commits_and_a_new_one_takes_over(
    *,
    queue: Queue,
    tmp_path: Path,
    settings: QueueSettings,
    clock: FakeClock,
    log: Logger,
    records: Records,
    restarted: list[Queue],
) -> None:
    first = await put(queue, BIG)
    old = committer_pid()
    with stopped(old):
        waiting = [asyncio.create_task(put(queue, BIG if n % 2 else SMALL)) for n in range(10)]
        await asyncio.sleep(0.2)  # sent to the frozen process, which cannot answer
        assert not any(task.done() for task in waiting)
        os.kill(old, signal.SIGKILL)
        results = await asyncio.wait_for(asyncio.gather(*waiting, return_exceptions=True), _WAIT)
    assert all(isinstance(result, QueueError) for result in results), results
    assert records.events("queue.commit_process_lost")
    assert files(tmp_path, "incoming") == set()  # every failed message's file is gone
    new = await new_committer(old)
    assert not alive(old, COMMITTER)
    later = await put_when_running(queue, BIG)
    assert queue.spool_path(later).read_bytes() == BIG
    assert committer_pid() == new
    assert rows(tmp_path)[0] == {first, later}  # nothing of the failed ones was acknowledged or kept
    await queue.stop()
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    restarted.append(again)
    await again.start()
    assert again.message_count() == 2
    known, _ = rows(tmp_path)
    assert files(tmp_path, "spool") <= known


async def test_a_kill_in_the_middle_of_commits_loses_no_acknowledged_message(
    *,
    queue: Queue,
    tmp_path: Path,
    settings: QueueSettings,
    clock: FakeClock,
    log: Logger,
    restarted: list[Queue],
) -> None:
    """Killed at whatever point of its work: acknowledged means kept; a file without a row goes at start."""
    old = committer_pid()
    acknowledged: dict[str, bytes] = {}
    failed: list[QueueError] = []

    async def client(number: int) -> None:  # one session after another, as a busy client sends
        for n in range(10):
            body = (BIG if n % 3 else SMALL) + b"%d.%d\r\n" % (number, n)
            try:
                acknowledged[await put(queue, body)] = body
            except QueueError as exc:
                failed.append(exc)
                await asyncio.sleep(0.2)  # a client tries again later; after a restart it succeeds

    clients = [asyncio.create_task(client(number)) for number in range(6)]
    for _ in range(int(_WAIT / 0.001)):  # kill once some are done (not all, unless the machine is fast)
        if queue.commit_stats().messages >= 6:
            break
        await asyncio.sleep(0.001)
    os.kill(old, signal.SIGKILL)
    await asyncio.wait_for(asyncio.gather(*clients), _WAIT)
    assert len(acknowledged) + len(failed) == 60
    await new_committer(old)
    await put_when_running(queue, SMALL)
    await queue.stop()
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    restarted.append(again)
    await again.start()
    known, spooled = rows(tmp_path)
    assert set(acknowledged) <= known
    in_spool = files(tmp_path, "spool")
    assert in_spool <= known  # recovery removed every file without a row
    assert spooled <= in_spool  # and every row that needs a file has it
    assert files(tmp_path, "incoming") == set()
    due = {d.queue_id: d for d in again.claim_due(limit=200)}
    for queue_id, body in acknowledged.items():
        stored = due[queue_id].body
        assert (stored if stored is not None else again.spool_path(queue_id).read_bytes()) == body


async def test_a_commit_while_the_process_is_restarted_is_refused_at_once(queue: Queue) -> None:
    old = committer_pid()
    await put(queue)
    os.kill(old, signal.SIGKILL)
    with pytest.raises(QueueError, match=r"not running|commit failed"):
        await put_until_refused(queue)
    await new_committer(old)
    assert await put_when_running(queue, SMALL)


async def test_the_process_ignores_a_stop_signal_meant_for_the_group(queue: Queue) -> None:
    pid = committer_pid()
    await put(queue)  # answered: the process has set up its signals (a signal before that ends it)
    os.kill(pid, signal.SIGTERM)
    os.kill(pid, signal.SIGINT)
    assert await put(queue, BIG)
    assert committer_pid() == pid


# --- stopping -------------------------------------------------------------------------------------------


async def test_stop_ends_the_process(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    queue = await started_queue(tmp_path, settings, clock, log)
    pid = committer_pid()
    await put(queue)
    await queue.stop()
    assert not alive(pid, COMMITTER)
    assert children(os.getpid(), COMMITTER) == []
    with pytest.raises(QueueError):
        await put(queue)


async def test_stop_waits_for_commits_already_sent(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    queue = await started_queue(tmp_path, settings, clock, log)
    pid = committer_pid()
    bodies = [BIG + b"%d\r\n" % n if n % 2 else SMALL + b"%d\r\n" % n for n in range(10)]
    with stopped(pid):
        tasks = [asyncio.create_task(put(queue, body)) for body in bodies]
        await asyncio.sleep(0.2)  # sent to the frozen process
        stopping = asyncio.create_task(queue.stop())
        await asyncio.sleep(0.2)
        assert not stopping.done()  # waiting for the answers
        assert not any(task.done() for task in tasks)
    await asyncio.wait_for(stopping, _WAIT)
    ids = [task.result() for task in tasks]  # every one acknowledged
    assert not alive(pid, COMMITTER)
    assert children(os.getpid(), COMMITTER) == []
    known, _ = rows(tmp_path)
    assert known == set(ids)
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await again.start()
    try:
        assert again.message_count() == 10
    finally:
        await again.stop()


async def test_stop_right_after_the_process_died_starts_no_new_one(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    queue = await started_queue(tmp_path, settings, clock, log)
    pid = committer_pid()
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(QueueError):
        await put_until_refused(queue)
    await queue.stop()
    await asyncio.sleep(1.5)  # past the gap between starts, when a restart would have come
    assert children(os.getpid(), COMMITTER) == []


async def test_stop_after_the_process_died_leaves_no_task_behind(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    queue = await started_queue(tmp_path, settings, clock, log)
    await put(queue)
    os.kill(committer_pid(), signal.SIGKILL)
    with pytest.raises(QueueError):
        await put_until_refused(queue)
    await queue.stop()
    try:
        left = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        assert left == []
    finally:
        await asyncio.sleep(1.5)  # let the restart task see the stop and end, so the test leaves nothing
