"""Operator actions on a live queue: list, show, retry, hold, release, delete, on a real SQLite database that
a running Queue uses at the same time (the admin has its own connection, as the CLI in a second shell)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest

from postroom.config.schema import QueueSettings
from postroom.observe.log import Logger
from postroom.queue import Envelope, Outcome, Queue, Recipient
from postroom.queue.admin import (
    AdminError,
    InvalidQueueIdError,
    QueueAdmin,
    Selection,
    UnknownMessageError,
    open_queue_admin,
    parse_queue_id,
    read_headers,
)
from postroom.store import open_database

from .conftest import FakeClock, Records, make_queue, put

BODY = b"Subject: hello\r\nFrom: a@example.test\r\n\r\nthe body\r\n"


@pytest.fixture
def admin(tmp_path: Path, queue: Queue, clock: FakeClock) -> Iterator[QueueAdmin]:
    with open_queue_admin(
        database_path=tmp_path / "postroom.db", queue_dir=tmp_path / "queue", clock=clock
    ) as opened:
        yield opened


def small_batches(tmp_path: Path, clock: FakeClock) -> QueueAdmin:
    """An admin whose bulk changes go two rows per transaction, to cross batch boundaries."""
    conn = open_database(tmp_path / "postroom.db")
    return QueueAdmin(conn=conn, queue_dir=tmp_path / "queue", clock=clock, batch=2)


async def defer(queue: Queue, queue_id: str, idx: int = 0, error: str = "451 4.2.0 mailbox busy") -> None:
    """Claims everything due and records a temporary failure for one recipient (the rest go back)."""
    due = queue.claim_due(limit=100)
    queue.release([d for d in due if (d.queue_id, d.idx) != (queue_id, idx)])
    queue.record([Outcome(queue_id, idx, "temporary", error)])


# --- ids -----------------------------------------------------------------------------------------------


def test_parse_queue_id_accepts_what_postroom_prints_in_any_case() -> None:
    assert parse_queue_id(" 0006123456789ABC ") == "0006123456789abc"


@pytest.mark.parametrize("text", ["", "xyz", "0006123456789ab", "0006123456789abcd", "../../etc/passwd1"])
def test_parse_queue_id_refuses_anything_else_in_one_line(text: str) -> None:
    with pytest.raises(InvalidQueueIdError, match="is not a queue id") as caught:
        parse_queue_id(text)
    assert "\n" not in str(caught.value)


def test_a_missing_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(AdminError, match="no queue database at"):
        open_queue_admin(database_path=tmp_path / "nowhere.db", queue_dir=tmp_path / "queue")


# --- list and show -------------------------------------------------------------------------------------


async def test_list_shows_each_message_with_its_recipients_oldest_first(
    queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    first = await put(queue, BODY, "a@example.test", "B@Example.TEST")
    clock.now += 10
    second = await put(queue, BODY, "c@other.test")
    views = list(admin.messages())
    assert [v.queue_id for v in views] == [first, second]
    one = views[0]
    assert (one.sender, one.size, one.held, one.spooled) == ("sender@example.test", len(BODY), False, True)
    assert (one.client_ip, one.helo) == ("192.0.2.1", "client.example.test")
    assert [(r.address, r.mailbox, r.state, r.attempts) for r in one.recipients] == [
        ("a@example.test", "a@example.test", "queued", 0),
        ("B@Example.TEST", "b@example.test", "queued", 0),
    ]


async def test_recipient_states_follow_recorded_outcomes(
    queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    queue_id = await put(queue, BODY, "ok@example.test", "later@example.test", "never@example.test")
    queue.claim_due(limit=10)
    queue.record(
        [
            Outcome(queue_id, 0, "delivered"),
            Outcome(queue_id, 1, "temporary", "451 4.2.0 mailbox busy"),
            Outcome(queue_id, 2, "permanent", "550 5.1.1 no such user"),
        ]
    )
    (view,) = admin.messages()
    states = [(r.state, r.attempts, r.next_attempt_at, r.last_error) for r in view.recipients]
    assert states == [
        ("delivered", 1, None, None),
        ("deferred", 1, clock.now + 60, "451 4.2.0 mailbox busy"),
        ("failed", 1, None, "550 5.1.1 no such user"),
    ]


async def test_filters_select_messages(queue: Queue, admin: QueueAdmin) -> None:
    plain = await put(queue, BODY, "alice@example.test")
    other = await put(queue, BODY, "bob@other.test", "carol@sub.example.test")
    deferred = await put(queue, BODY, "dave@example.test")
    await defer(queue, deferred)

    def ids(**fields: object) -> list[str]:
        return [v.queue_id for v in admin.messages(Selection(**fields))]  # type: ignore[arg-type]

    assert ids(sender="SENDER@example.test") == [plain, other, deferred]
    assert ids(sender="") == []
    assert ids(recipient="ALICE@example.test") == [plain]
    assert ids(domain="Example.Test") == [plain, deferred]  # exact: not sub.example.test
    assert ids(domain="sub.example.test") == [other]
    assert ids(domain="example_test") == []  # LIKE wildcards are escaped
    assert ids(state="deferred") == [deferred]
    assert ids(state="queued") == [plain, other]
    assert ids(state="failed") == []
    admin.hold(Selection(queue_ids=(plain,)))
    assert ids(state="held") == [plain]
    assert ids(state="queued") == [other]  # held messages are not waiting for delivery
    assert ids(queue_ids=(other, plain)) == [plain, other]


async def test_null_sender_is_selected_by_the_empty_string(queue: Queue, admin: QueueAdmin) -> None:
    writer = queue.open_spool()
    writer.write(BODY)
    bounce = await queue.commit(
        writer, Envelope(sender="", recipients=(Recipient("x@example.test", "x@example.test"),))
    )
    await put(queue, BODY)
    assert [v.queue_id for v in admin.messages(Selection(sender=""))] == [bounce]


async def test_show_reads_headers_from_the_spool_file(queue: Queue, admin: QueueAdmin) -> None:
    queue_id = await put(queue, BODY)
    view = admin.message(queue_id)
    with admin.open_content(view) as content:
        assert read_headers(content) == b"Subject: hello\r\nFrom: a@example.test\r\n"
    with admin.open_content(view) as content:
        assert content.read() == BODY


async def test_show_reads_an_inline_body_from_the_index(
    tmp_path: Path, clock: FakeClock, log: Logger
) -> None:
    settings = QueueSettings(retry_schedule=(60.0,), max_lifetime=3600.0, inline_max=4096)
    queue = make_queue(tmp_path, settings=settings, clock=clock, log=log)
    await queue.start()
    try:
        queue_id = await put(queue, BODY)
        with open_queue_admin(database_path=tmp_path / "postroom.db", queue_dir=tmp_path / "queue") as admin:
            view = admin.message(queue_id)
            assert not view.spooled
            with admin.open_content(view) as content:
                assert read_headers(content) == b"Subject: hello\r\nFrom: a@example.test\r\n"
            assert admin.delete(Selection(queue_ids=(queue_id,))).messages == 1
            assert list(admin.messages()) == []
    finally:
        await queue.stop()


async def test_show_of_an_unknown_or_departed_message_says_so(queue: Queue, admin: QueueAdmin) -> None:
    with pytest.raises(UnknownMessageError, match=r"^no message 0006123456789abc in the queue$"):
        admin.message("0006123456789abc")
    queue_id = await put(queue, BODY)
    view = admin.message(queue_id)
    queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, 0, "delivered")])  # delivered meanwhile: row and file are gone
    with pytest.raises(UnknownMessageError):
        admin.open_content(view)


def test_read_headers_stops_at_the_limit() -> None:
    endless = io.BytesIO(b"X-More: z\r\n" * 1000)
    assert len(read_headers(endless, limit=200)) < 220


# --- retry ---------------------------------------------------------------------------------------------


async def test_retry_makes_a_deferred_recipient_due_now(
    queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    queue_id = await put(queue, BODY)
    await defer(queue, queue_id)
    assert queue.claim_due(limit=10) == []  # waiting for its next attempt, a minute from now
    assert admin.retry(Selection(queue_ids=(queue_id,))) == 1
    (due,) = queue.claim_due(limit=10)
    assert (due.queue_id, due.attempts) == (queue_id, 2)


async def test_retry_leaves_a_delivery_under_way_alone(queue: Queue, admin: QueueAdmin) -> None:
    queue_id = await put(queue, BODY)
    (claimed,) = queue.claim_due(limit=10)  # a delivery is running; its outcome is not recorded yet
    assert admin.retry(Selection()) == 0
    assert queue.claim_due(limit=10) == []  # no second, parallel attempt
    queue.record([Outcome(queue_id, claimed.idx, "delivered")])


async def test_retry_by_domain_touches_only_that_domains_recipients(queue: Queue, admin: QueueAdmin) -> None:
    queue_id = await put(queue, BODY, "a@example.test", "b@other.test")
    queue.claim_due(limit=10)
    queue.record([Outcome(queue_id, 0, "temporary", "busy"), Outcome(queue_id, 1, "temporary", "busy")])
    assert admin.retry(Selection(domain="other.test")) == 1
    assert [(d.queue_id, d.idx) for d in queue.claim_due(limit=10)] == [(queue_id, 1)]


async def test_retry_skips_held_messages_and_counts_in_batches(
    tmp_path: Path, queue: Queue, admin: QueueAdmin, clock: FakeClock
) -> None:
    ids = [await put(queue, BODY, "a@example.test", "b@example.test") for _ in range(3)]
    queue.claim_due(limit=100)
    queue.record([Outcome(queue_id, idx, "temporary", "busy") for queue_id in ids for idx in (0, 1)])
    admin.hold(Selection(queue_ids=(ids[0],)))
    with small_batches(tmp_path, clock) as bulk:
        assert bulk.retry(Selection()) == 4
    assert sorted({d.queue_id for d in queue.claim_due(limit=100)}) == sorted(ids[1:])


# --- hold and release ----------------------------------------------------------------------------------


async def test_held_messages_are_not_claimed_until_released(queue: Queue, admin: QueueAdmin) -> None:
    held = await put(queue, BODY)
    free = await put(queue, BODY)
    assert admin.hold(Selection(queue_ids=(held,))) == 1
    assert admin.hold(Selection(queue_ids=(held,))) == 0  # already held
    assert [d.queue_id for d in queue.claim_due(limit=10)] == [free]
    assert admin.message(held).held
    assert admin.release(Selection(queue_ids=(held,))) == 1
    assert [d.queue_id for d in queue.claim_due(limit=10)] == [held]


async def test_hold_all_in_batches(tmp_path: Path, queue: Queue, clock: FakeClock) -> None:
    ids = [await put(queue, BODY) for _ in range(5)]
    with small_batches(tmp_path, clock) as bulk:
        assert bulk.hold(Selection()) == 5
        assert all(view.held for view in bulk.messages())
        assert queue.claim_due(limit=10) == []
        assert bulk.release(Selection(queue_ids=(ids[2],))) == 1
    assert [d.queue_id for d in queue.claim_due(limit=10)] == [ids[2]]


async def test_bulk_changes_report_their_running_count_after_each_batch(
    tmp_path: Path, queue: Queue, clock: FakeClock
) -> None:
    for _ in range(5):
        await put(queue, BODY)
    counts: list[int] = []
    conn = open_database(tmp_path / "postroom.db")
    bulk = QueueAdmin(conn=conn, queue_dir=tmp_path / "queue", clock=clock, batch=2, progress=counts.append)
    with bulk:
        assert bulk.hold(Selection()) == 5
    assert counts == [2, 4, 5, 5]  # two rows a transaction, then the empty batch that ends the run


# --- delete --------------------------------------------------------------------------------------------


async def test_delete_removes_rows_and_spool_file(queue: Queue, admin: QueueAdmin) -> None:
    gone = await put(queue, BODY, "a@example.test", "b@example.test")
    kept = await put(queue, BODY)
    assert queue.spool_path(gone).exists()
    assert admin.delete(Selection(queue_ids=(gone,))).messages == 1
    assert not queue.spool_path(gone).exists()
    assert [v.queue_id for v in admin.messages()] == [kept]
    assert [d.queue_id for d in queue.claim_due(limit=10)] == [kept]


async def test_an_outcome_for_a_deleted_message_is_ignored(
    queue: Queue, admin: QueueAdmin, records: Records
) -> None:
    queue_id = await put(queue, BODY, "a@example.test", "b@example.test")
    in_flight = queue.claim_due(limit=10)  # the server is delivering it right now
    admin.delete(Selection(queue_ids=(queue_id,)))
    queue.record(
        [Outcome(queue_id, in_flight[0].idx, "delivered"), Outcome(queue_id, in_flight[1].idx, "temporary")]
    )
    assert queue.message_count() == 0
    assert records.events("delivery.delivered") == []
    assert records.events("delivery.deferred") == []
    assert records.events("message.removed") == []


async def test_unknown_ids_change_nothing(queue: Queue, admin: QueueAdmin) -> None:
    queue_id = await put(queue, BODY)
    with pytest.raises(UnknownMessageError, match=r"^no message 0006123456789abc in the queue$"):
        admin.delete(Selection(queue_ids=(queue_id, "0006123456789abc")))
    assert queue.spool_path(queue_id).exists()
    assert [v.queue_id for v in admin.messages()] == [queue_id]
    with pytest.raises(UnknownMessageError, match="no messages 0006123456789abc, 0006123456789abd"):
        admin.hold(Selection(queue_ids=("0006123456789abc", "0006123456789abd")))


async def test_delete_all_with_a_filter_in_batches(tmp_path: Path, queue: Queue, clock: FakeClock) -> None:
    spam = [await put(queue, BODY, f"v{n}@victim.test") for n in range(5)]
    ham = await put(queue, BODY, "friend@example.test")
    with small_batches(tmp_path, clock) as bulk:
        assert bulk.delete(Selection(domain="victim.test")).messages == 5
        assert [v.queue_id for v in bulk.messages()] == [ham]
    assert not any(queue.spool_path(queue_id).exists() for queue_id in spam)
    assert queue.spool_path(ham).exists()


async def test_delete_while_the_queue_keeps_accepting(queue: Queue, admin: QueueAdmin) -> None:
    before = await put(queue, BODY)
    deleted = admin.delete(Selection())
    after = await put(queue, BODY)
    assert deleted.messages == 1
    assert [v.queue_id for v in admin.messages()] == [after]
    assert not queue.spool_path(before).exists()
