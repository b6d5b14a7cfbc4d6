"""The Queue: durable commit, group commit, recovery, claims and recorded outcomes."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Outcome, Queue, QueueError

from .conftest import FakeClock, Records, envelope, make_queue, put


@pytest.fixture(params=[False, True], ids=["commit-threads", "commit-process"])
def settings(request: pytest.FixtureRequest) -> QueueSettings:
    """Every test here runs with both committers (commit.py's threads, commit_process.py's process)."""
    return QueueSettings(
        retry_schedule=(60.0, 300.0),
        max_lifetime=3600.0,
        claim_lease=600.0,
        inline_max=0,
        commit_process=request.param,
    )

# --- commit -----------------------------------------------------------------------------------------


async def test_commit_moves_the_exact_bytes_into_the_spool(queue: Queue, tmp_path: Path) -> None:
    body = b"Received: by test\r\nSubject: hi\r\n\r\nhello\r\n"
    queue_id = await put(queue, body)
    assert queue.spool_path(queue_id).read_bytes() == body
    assert not (tmp_path / "queue" / "incoming" / queue_id).exists()
    assert queue.message_count() == 1


async def test_committed_message_survives_a_restart(
    queue: Queue, tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    queue_id = await put(queue, b"body\r\n", "a@example.test", "b@example.test")
    await queue.stop()
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await again.start()
    try:
        assert again.message_count() == 1
        due = again.claim_due(limit=10)
        assert [(d.queue_id, d.idx, d.mailbox) for d in due] == [
            (queue_id, 0, "a@example.test"),
            (queue_id, 1, "b@example.test"),
        ]
        assert due[0].sender == "sender@example.test"
        assert due[0].received_at == clock.now
        assert again.spool_path(queue_id).read_bytes() == b"body\r\n"
    finally:
        await again.stop()


async def test_commit_wakes_the_scheduler(queue: Queue) -> None:
    work = queue.wait_for_work()
    work.clear()
    await put(queue)
    assert work.is_set()


async def test_concurrent_commits_share_batches(queue: Queue) -> None:
    ids = await asyncio.gather(*(put(queue, b"m%d\r\n" % n) for n in range(200)))
    assert len(set(ids)) == 200
    stats = queue.commit_stats()
    assert stats.messages == 200
    assert stats.batches < 50
    assert stats.largest_batch > 1
    assert queue.message_count() == 200


async def test_a_batch_never_exceeds_commit_max_batch(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger
) -> None:
    limited = QueueSettings(commit_max_batch=16, commit_process=settings.commit_process)
    queue = make_queue(tmp_path, settings=limited, clock=clock, log=log)
    await queue.start()
    try:
        await asyncio.gather(*(put(queue) for _ in range(100)))
        stats = queue.commit_stats()
    finally:
        await queue.stop()
    assert stats.messages == 100
    assert stats.largest_batch <= 16
    assert stats.batches >= 7


async def test_a_failed_commit_raises_queue_error_and_leaves_nothing(
    queue: Queue, tmp_path: Path, records: Records
) -> None:
    spool_dir = tmp_path / "queue" / "spool"
    writer = queue.open_spool()
    writer.write(b"doomed\r\n")
    shutil.rmtree(spool_dir)  # the rename into spool/ fails: a real I/O error, no mock
    with pytest.raises(QueueError):
        await queue.commit(writer, envelope())
    assert not (tmp_path / "queue" / "incoming" / writer.queue_id).exists()
    assert queue.message_count() == 0
    assert records.events("queue.commit_failed")[0]["queue_id"] == writer.queue_id
    writer.abort()  # harmless after a failed commit
    spool_dir.mkdir()
    assert await put(queue)  # the queue keeps working


async def test_commit_after_abort_is_refused(queue: Queue) -> None:
    writer = queue.open_spool()
    writer.abort()
    with pytest.raises(RuntimeError):
        await queue.commit(writer, envelope())


def test_an_envelope_needs_a_recipient() -> None:
    with pytest.raises(ValueError, match="recipient"):
        envelope().__class__(sender="", recipients=())


# --- recovery ---------------------------------------------------------------------------------------


async def test_recovery_removes_unacknowledged_files_and_keeps_committed_ones(
    tmp_path: Path, settings: QueueSettings, clock: FakeClock, log: Logger, records: Records
) -> None:
    queue = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await queue.start()
    kept = await put(queue)
    await queue.stop()
    # what a kill -9 leaves: a half-written message, and one renamed but never indexed
    (tmp_path / "queue" / "incoming" / "0000000000001abc").write_bytes(b"half")
    (tmp_path / "queue" / "spool" / "0000000000002abc").write_bytes(b"never acknowledged")
    again = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await again.start()
    try:
        assert sorted(p.name for p in (tmp_path / "queue" / "spool").iterdir()) == [kept]
        assert list((tmp_path / "queue" / "incoming").iterdir()) == []
        assert again.message_count() == 1
        report = records.events("queue.recovered")[-1]
        assert (report["removed_spool"], report["removed_incoming"]) == (1, 1)
    finally:
        await again.stop()


# --- claims -----------------------------------------------------------------------------------------


async def test_claim_moves_the_next_attempt_before_returning(
    queue: Queue, clock: FakeClock, settings: QueueSettings
) -> None:
    await put(queue, b"x\r\n", "a@example.test", "b@example.test")
    first = queue.claim_due(limit=10)
    assert [d.attempts for d in first] == [1, 1]
    assert queue.claim_due(limit=10) == []
    clock.now += settings.claim_lease - 1
    assert queue.claim_due(limit=10) == []
    clock.now += 1
    again = queue.claim_due(limit=10)
    assert [d.attempts for d in again] == [2, 2]


async def test_claim_respects_the_limit_oldest_first(queue: Queue, clock: FakeClock) -> None:
    ids = []
    for _ in range(5):
        ids.append(await put(queue))
        clock.now += 1
    assert [d.queue_id for d in queue.claim_due(limit=3)] == ids[:3]
    assert [d.queue_id for d in queue.claim_due(limit=3)] == ids[3:]


async def test_release_makes_claims_due_again_without_counting_them(queue: Queue) -> None:
    await put(queue)
    claimed = queue.claim_due(limit=1)
    queue.release(claimed)
    assert [d.attempts for d in queue.claim_due(limit=1)] == [1]


# --- outcomes ---------------------------------------------------------------------------------------


async def test_all_delivered_removes_message_and_spool_file(queue: Queue, records: Records) -> None:
    queue_id = await put(queue, b"x\r\n", "a@example.test", "b@example.test")
    due = queue.claim_due(limit=10)
    queue.record([Outcome(due[0].queue_id, due[0].idx, "delivered")])
    assert queue.message_count() == 1
    assert queue.spool_path(queue_id).exists()
    queue.record([Outcome(due[1].queue_id, due[1].idx, "delivered")])
    assert queue.message_count() == 0
    assert not queue.spool_path(queue_id).exists()
    assert [r["queue_id"] for r in records.events("delivery.delivered")] == [queue_id, queue_id]
    assert [r["queue_id"] for r in records.events("message.removed")] == [queue_id]


async def test_temporary_failure_is_retried_per_schedule(
    queue: Queue, clock: FakeClock, records: Records
) -> None:
    queue_id = await put(queue)
    (due,) = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, due.idx, "temporary", "disk full")])
    deferred = records.events("delivery.deferred")[0]
    assert deferred["queue_id"] == queue_id
    assert deferred["retry_at"] == clock.now + 60.0
    clock.now += 59
    assert queue.claim_due(limit=10) == []
    clock.now += 1
    (again,) = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, again.idx, "temporary", "disk full")])
    assert records.events("delivery.deferred")[1]["retry_at"] == clock.now + 300.0
    assert queue.message_count() == 1


async def test_temporary_failure_past_max_lifetime_fails_and_removes(
    queue: Queue, clock: FakeClock, records: Records, settings: QueueSettings
) -> None:
    queue_id = await put(queue)
    clock.now += settings.max_lifetime
    (due,) = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, due.idx, "temporary", "still full")])
    failed = records.events("delivery.failed")[0]
    assert failed["queue_id"] == queue_id
    assert "expired" in failed["error"]
    assert queue.message_count() == 0
    assert not queue.spool_path(queue_id).exists()


async def test_permanent_failure_fails_only_that_recipient(queue: Queue, records: Records) -> None:
    queue_id = await put(queue, b"x\r\n", "a@example.test", "b@example.test")
    a, _b = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, a.idx, "permanent", "no such user")])
    assert records.events("delivery.failed")[0]["rcpt"] == "a@example.test"
    assert queue.message_count() == 1


async def test_outcomes_for_finished_recipients_are_ignored(queue: Queue, records: Records) -> None:
    queue_id = await put(queue)
    (due,) = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, due.idx, "delivered")])
    queue.record([Outcome(queue_id, due.idx, "delivered"), Outcome("0000000000000000", 0, "delivered")])
    assert len(records.events("delivery.delivered")) == 1
