"""The claim marker: a recipient in the middle of a delivery attempt (first or later) is visible to the
operator's tools, which leave it to that delivery; a lease that ended (its worker died) frees it again."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.queue import Outcome, Queue
from postroom.queue.admin import QueueAdmin, Selection, open_queue_admin

from .conftest import FakeClock, put

BODY = b"Subject: claims\r\n\r\nbody\r\n"


@pytest.fixture
def admin(tmp_path: Path, queue: Queue, clock: FakeClock) -> Iterator[QueueAdmin]:
    with open_queue_admin(
        database_path=tmp_path / "postroom.db", queue_dir=tmp_path / "queue", clock=clock
    ) as opened:
        yield opened


async def test_retry_leaves_a_second_attempt_under_way_alone(
    queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    queue_id = await put(queue, BODY)
    (first,) = queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, first.idx, "temporary", "451 4.2.0 busy")])
    clock.now += 61  # the retry schedule's first interval is 60 s
    (second,) = queue.claim_due(limit=10)  # attempt 2 runs; last_error still holds attempt 1's reply
    assert second.attempts == 2
    (recipient,) = admin.message(queue_id).recipients
    assert (recipient.state, recipient.in_delivery(clock.now)) == ("deferred", True)
    assert admin.retry(Selection()) == 0
    assert admin.retry(Selection(queue_ids=(queue_id,))) == 0
    assert queue.claim_due(limit=10) == []  # no parallel third attempt
    queue.record([Outcome(queue_id, second.idx, "temporary", "451 4.2.0 still busy")])
    (recipient,) = admin.message(queue_id).recipients
    assert recipient.claimed_until is None
    assert admin.retry(Selection()) == 1  # the outcome is in: a retry may go ahead
    (third,) = queue.claim_due(limit=10)
    assert third.attempts == 3


async def test_a_claim_whose_lease_ended_can_be_retried(
    queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    queue_id = await put(queue, BODY)
    queue.claim_due(limit=10)  # the worker dies: no outcome ever comes
    assert admin.retry(Selection(queue_ids=(queue_id,))) == 0
    clock.now += 601  # claim_lease is 600 s
    (recipient,) = admin.message(queue_id).recipients
    assert not recipient.in_delivery(clock.now)
    assert admin.retry(Selection(queue_ids=(queue_id,))) == 1


async def test_released_claims_are_no_longer_marked(
    queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    queue_id = await put(queue, BODY, "a@example.test", "b@example.test")
    queue.release(queue.claim_due(limit=10))
    assert [r.claimed_until for r in admin.message(queue_id).recipients] == [None, None]
    assert not any(r.in_delivery(clock.now) for r in admin.message(queue_id).recipients)


async def test_claim_for_bounce_takes_only_recipients_no_delivery_holds(
    queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    queue_id = await put(queue, BODY, "a@example.test", "b@example.test", "c@example.test")
    due = queue.claim_due(limit=10)
    queue.release([d for d in due if d.idx != 1])  # recipient 1 is being delivered right now
    assert admin.claim_for_bounce(queue_id, lease=300) == ([0, 2], 1)
    assert queue.claim_due(limit=10) == []  # the server leaves the operator's claim alone
    assert admin.claim_for_bounce(queue_id, lease=300) == ([], 3)
