"""DSN (RFC 3461/3464) in what the queue reports and dsn.py builds: NOTIFY honoured, success notices,
one delay warning, ENVID/ORCPT fields, RET=FULL. A real Queue on tmp_path, the fake clock."""

from __future__ import annotations

import email
import email.message
import email.policy
from pathlib import Path

import pytest
from tests.helpers.fakes import FakeClock

from postroom.config.schema import QueueSettings
from postroom.delivery.dsn import DsnSettings, build_dsn
from postroom.delivery.dsn_params import mail_params, rcpt_params
from postroom.observe.log import Logger
from postroom.queue import Envelope, FailedMessage, FailedRecipient, Outcome, Queue, Recipient

SETTINGS = DsnSettings(reporting_mta="mx.example.test", boundary="=_q1", message_id="q1.dsn@mx.example.test")
BODY = b"From: a@example.test\r\nSubject: hello\r\n\r\nThe body.\r\n"


@pytest.fixture
async def dsn_queue(tmp_path: Path, clock: FakeClock, log: Logger) -> Queue:
    q = Queue(
        settings=QueueSettings(retry_schedule=(60.0,), max_lifetime=36000.0, delay_warning=3600.0),
        queue_dir=tmp_path / "queue",
        database_path=tmp_path / "postroom.db",
        clock=clock,
        log=log,
    )
    await q.start()
    yield q  # type: ignore[misc]
    await q.stop()


async def _put(
    queue: Queue, *recipients: Recipient, ret: str = "", envid: str = "", sender: str = "a@x.test"
) -> str:
    writer = queue.open_spool()
    writer.write(BODY)
    envelope = Envelope(sender=sender, recipients=recipients, ret=ret, envid=envid)
    return await queue.commit(writer, envelope)


def _parse(data: bytes) -> email.message.EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, email.message.EmailMessage)
    return message


async def test_notify_never_and_success_decide_who_hears_what(dsn_queue: Queue) -> None:
    quiet = Recipient("q@r.test", "q@r.test", "smtp", "NEVER")
    loud = Recipient("l@r.test", "l@r.test", "smtp", "SUCCESS", "rfc822;L@orig.test")
    plain = Recipient("p@r.test", "p@r.test", "smtp")
    queue_id = await _put(dsn_queue, quiet, loud, plain, envid="E-1")
    due = {r.address: r for r in dsn_queue.claim_due(limit=10)}
    assert (due["l@r.test"].notify, due["l@r.test"].orcpt) == ("SUCCESS", "rfc822;L@orig.test")
    assert due["l@r.test"].envid == "E-1"
    reports = dsn_queue.record(
        [
            Outcome(queue_id, due["q@r.test"].idx, "permanent", "no", status="5.1.1"),
            Outcome(
                queue_id, due["l@r.test"].idx, "delivered", "ok", status="2.0.0", success_action="relayed"
            ),
            Outcome(queue_id, due["p@r.test"].idx, "delivered", "ok", status="2.0.0"),
        ]
    )
    assert len(reports) == 1
    (report,) = reports[0].recipients
    assert (report.address, report.action, report.orcpt) == ("l@r.test", "relayed", "rfc822;L@orig.test")
    assert reports[0].envid == "E-1"


async def test_a_next_hop_that_takes_notify_reports_success_itself(dsn_queue: Queue) -> None:
    queue_id = await _put(dsn_queue, Recipient("l@r.test", "l@r.test", "smtp", "SUCCESS,FAILURE"))
    (due,) = dsn_queue.claim_due(limit=10)
    assert dsn_queue.record([Outcome(queue_id, due.idx, "delivered", "ok", success_action="")]) == []


async def test_one_delay_warning_after_the_delay_and_none_when_notify_excludes_it(
    dsn_queue: Queue, clock: FakeClock
) -> None:
    queue_id = await _put(
        dsn_queue,
        Recipient("d@r.test", "d@r.test", "smtp"),
        Recipient("f@r.test", "f@r.test", "smtp", "FAILURE"),
    )
    for step in range(4):  # at 0, 3000, 6000 and 9000 seconds; the warning is due from 3600
        due = dsn_queue.claim_due(limit=10)
        assert len(due) == 2
        reports = dsn_queue.record(
            [Outcome(queue_id, r.idx, "temporary", "busy", status="4.2.1") for r in due]
        )
        if step == 2:
            assert [r.address for r in reports[0].recipients] == ["d@r.test"]
            warning = reports[0].recipients[0]
            assert warning.action == "delayed"
            assert warning.will_retry_until == pytest.approx(1_700_000_000.0 + 36000.0)
        else:
            assert reports == []
        clock.now += 3000.0


async def test_ret_full_returns_the_whole_message_on_failure(dsn_queue: Queue) -> None:
    queue_id = await _put(dsn_queue, Recipient("x@r.test", "x@r.test", "smtp"), ret="FULL")
    (due,) = dsn_queue.claim_due(limit=10)
    (report,) = dsn_queue.record([Outcome(queue_id, due.idx, "permanent", "no", status="5.1.1")])
    assert report.ret == "FULL"
    assert report.original == BODY
    message = _parse(build_dsn(report, settings=SETTINGS, now=0.0))
    returned = message.get_payload()[2]  # type: ignore[index]
    assert returned.get_content_type() == "message/rfc822"
    assert "The body." in returned.as_string()


def test_report_fields_for_a_success_notice() -> None:
    notice = FailedRecipient(
        address="l@r.test", status="2.0.0", detail="delivered", action="delivered", orcpt="rfc822;L@orig.test"
    )
    message = FailedMessage(
        queue_id="q1",
        sender="a@x.test",
        received_at=0.0,
        recipients=(notice,),
        headers=BODY[:40],
        envid="E-1",
    )
    report = _parse(build_dsn(message, settings=SETTINGS, now=0.0))
    assert report["Subject"] == "Successful Mail Delivery Report"
    _human, status, headers = report.get_payload()  # type: ignore[misc]
    per_message, per_recipient = status.get_payload()
    assert per_message["Original-Envelope-Id"] == "E-1"
    assert per_recipient["Original-Recipient"] == "rfc822;L@orig.test"
    assert per_recipient["Action"] == "delivered"
    assert headers.get_content_type() == "text/rfc822-headers"


def test_dsn_parameters_passed_on_are_xtext_and_orcpt_is_added() -> None:
    from postroom.queue import DueRecipient

    given = DueRecipient(
        "q",
        0,
        "b@r.test",
        "b@r.test",
        "a@x.test",
        1,
        0.0,
        None,
        "smtp",
        "SUCCESS",
        "rfc822;B+x=y@o.test",
        "HDRS",
        "id 1",
    )
    assert mail_params(given) == {"RET": "HDRS", "ENVID": "id+201"}
    assert rcpt_params(given) == {"NOTIFY": "SUCCESS", "ORCPT": "rfc822;B+2Bx+3Dy@o.test"}
    bare = DueRecipient("q", 0, "Bob@r.test", "Bob@r.test", "a@x.test", 1, 0.0, None, "smtp")
    assert mail_params(bare) == {}
    assert rcpt_params(bare) == {"ORCPT": "rfc822;Bob@r.test"}
