"""Scheduler end to end: committed messages end up in Maildirs, failures wait and are retried."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

import pytest

from postroom.config.schema import DeliverySettings
from postroom.delivery import Scheduler
from postroom.delivery.courier import Courier
from postroom.mailbox import Maildirs
from postroom.observe.log import Logger
from postroom.queue import DueRecipient, Outcome, Queue

from .conftest import FakeClock, Records, put


def event_counter(log: Logger, event: str, target: int) -> asyncio.Event:
    """An asyncio.Event set once ``event`` has been logged ``target`` times (from any thread)."""
    loop = asyncio.get_running_loop()
    reached = asyncio.Event()
    seen = [0]

    def listener(record: dict[str, object]) -> None:
        if record["event"] == event:
            seen[0] += 1
            if seen[0] == target:
                loop.call_soon_threadsafe(reached.set)

    log.add_listener(listener)
    return reached


@pytest.mark.parametrize("gather", [0.0, 0.05], ids=["at-once", "gathering"])
async def test_committed_messages_are_delivered_and_removed(
    queue: Queue, maildirs: Maildirs, log: Logger, gather: float
) -> None:
    count = 60
    removed = event_counter(log, "message.removed", count)
    settings = DeliverySettings(concurrency=4, poll_interval=60, gather=gather)
    scheduler = Scheduler(queue=queue, maildirs=maildirs, settings=settings, log=log)
    await scheduler.start()
    try:
        for n in range(count):
            await put(queue, b"Subject: %d\r\n\r\nbody\r\n" % n, f"user{n % 3}@example.test")
        await asyncio.wait_for(removed.wait(), 20)
    finally:
        await scheduler.stop()
    assert queue.message_count() == 0
    delivered = sum(len(maildirs.for_address(f"user{i}@example.test").list()) for i in range(3))
    assert delivered == count
    assert not any((queue.spool_path("0" * 16).parent).iterdir())


async def test_messages_queued_before_start_are_delivered(
    queue: Queue, maildirs: Maildirs, log: Logger
) -> None:
    for _ in range(5):
        await put(queue, b"x\r\n", "a@example.test", "b@example.test")
    removed = event_counter(log, "message.removed", 5)
    settings = DeliverySettings(poll_interval=60)
    scheduler = Scheduler(queue=queue, maildirs=maildirs, settings=settings, log=log)
    await scheduler.start()
    try:
        await asyncio.wait_for(removed.wait(), 20)
    finally:
        await scheduler.stop()
    assert len(maildirs.for_address("b@example.test").list()) == 5


async def test_an_unwritable_mailbox_is_deferred_then_delivered_never_lost(
    queue: Queue, maildirs: Maildirs, log: Logger, records: Records, clock: FakeClock
) -> None:
    blocker = maildirs.path_for("bob@example.test")
    blocker.parent.mkdir(parents=True)
    blocker.write_bytes(b"a file where the maildir should be")  # root ignores chmod; this fails for root too
    deferred = event_counter(log, "delivery.deferred", 1)
    removed = event_counter(log, "message.removed", 1)
    settings = DeliverySettings(poll_interval=60)
    scheduler = Scheduler(queue=queue, maildirs=maildirs, settings=settings, log=log)
    await scheduler.start()
    try:
        queue_id = await put(queue, b"keep me\r\n", "bob@example.test")
        await asyncio.wait_for(deferred.wait(), 20)
        assert queue.message_count() == 1
        assert queue.spool_path(queue_id).exists()
        blocker.unlink()
        clock.now += 60  # the retry schedule's first interval
        queue.wait_for_work().set()
        await asyncio.wait_for(removed.wait(), 20)
    finally:
        await scheduler.stop()
    (message,) = maildirs.for_address("bob@example.test").list()
    assert maildirs.for_address("bob@example.test").read(message.name).endswith(b"keep me\n")
    assert records.events("delivery.deferred")[0]["queue_id"] == queue_id


def with_courier(
    queue: Queue, maildirs: Maildirs, log: Logger, courier: Courier, *, concurrency: int
) -> Scheduler:
    """A scheduler whose deliveries go to ``courier`` (a test's own), polling only every minute."""
    settings = DeliverySettings(concurrency=concurrency, poll_interval=60)
    return Scheduler(queue=queue, maildirs=maildirs, settings=settings, log=log, courier=courier)


class GatedCourier:
    """Delivers only when the test opens the gate, so stop() meets deliveries in flight."""

    def __init__(self) -> None:
        import threading

        self.gate = threading.Event()
        self.started = threading.Semaphore(0)

    def deliver(self, recipient: DueRecipient) -> Outcome:
        return self.deliver_batch([recipient])[0]

    def deliver_batch(self, recipients: Sequence[DueRecipient]) -> list[Outcome]:
        self.started.release()
        self.gate.wait(10)
        return [Outcome(r.queue_id, r.idx, "delivered") for r in recipients]


async def test_stop_finishes_running_deliveries_and_releases_the_rest(
    queue: Queue, maildirs: Maildirs, log: Logger, tmp_path: Path
) -> None:
    for _ in range(40):  # chunks of 16, 16 and 8 for two workers
        await put(queue, b"x\r\n", "a@example.test")
    courier = GatedCourier()
    scheduler = with_courier(queue, maildirs, log, courier, concurrency=2)
    await scheduler.start()
    for _ in range(2):  # both workers are busy; a chunk of eight waits
        assert await asyncio.to_thread(courier.started.acquire, True, 10)
    stopping = asyncio.create_task(scheduler.stop(grace=10))
    await asyncio.sleep(0)
    courier.gate.set()
    await stopping
    assert queue.message_count() == 8
    assert len(queue.claim_due(limit=10)) == 8  # released: due now, not after the lease


class CountingCourier:
    """Delivers at once and remembers how many recipients each batch (one worker's chunk) held."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def deliver(self, recipient: DueRecipient) -> Outcome:
        return self.deliver_batch([recipient])[0]

    def deliver_batch(self, recipients: Sequence[DueRecipient]) -> list[Outcome]:
        self.batches.append(len(recipients))
        return [Outcome(r.queue_id, r.idx, "delivered") for r in recipients]


@pytest.mark.parametrize(
    ("messages", "chunks"), [(3, [3]), (8, [4, 4]), (40, [5] * 8), (200, [16] * 12 + [8])]
)
async def test_a_round_is_cut_into_chunks_of_at_least_four_and_at_most_sixteen(
    queue: Queue, maildirs: Maildirs, log: Logger, messages: int, chunks: list[int]
) -> None:
    """Each chunk shares one fsync of new/ and one thread hand-off: a small round is not cut finer."""
    for _ in range(messages):
        await put(queue, b"x\r\n", "a@example.test")
    courier = CountingCourier()
    done = event_counter(log, "message.removed", messages)
    scheduler = with_courier(queue, maildirs, log, courier, concurrency=8)
    await scheduler.start()
    try:
        await asyncio.wait_for(done.wait(), 30)
    finally:
        await scheduler.stop()
    assert sorted(courier.batches, reverse=True) == chunks
