"""The mail transaction without a socket: MAIL, RCPT, a body into a real queue's spool, the commit and its
reply, and the ways a transaction ends without one (server/transaction.py)."""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from postroom.auth.accounts import Accounts
from postroom.config.schema import QueueSettings, SmtpSettings
from postroom.observe.log import Logger
from postroom.observe.maillog import MailLog
from postroom.queue import Queue
from postroom.server.envelope import EnvelopeRules
from postroom.server.limits import ConnectionLimits
from postroom.server.services import SessionServices
from postroom.server.transaction import Transaction
from postroom.smtp import events, replies
from postroom.smtp.server import ServerSettings
from postroom.smtp.types import Address, Reply
from tests.helpers.fakes import FakeClock, Records

CLIENT = "192.0.2.7"


@pytest.fixture
async def queue(tmp_path: Path, clock: FakeClock, log: Logger) -> AsyncIterator[Queue]:
    q = Queue(
        settings=QueueSettings(inline_max=0),
        queue_dir=tmp_path / "queue",
        database_path=tmp_path / "postroom.db",
        clock=clock,
        log=log,
    )
    await q.start()
    yield q
    await q.stop()


@pytest.fixture
def transaction(queue: Queue, accounts: Accounts, clock: FakeClock, log: Logger) -> Transaction:
    services = SessionServices(
        hostname="mx.example.test",
        protocol=ServerSettings(hostname="mx.example.test"),
        smtp=SmtpSettings(),
        queue=queue,
        accounts=accounts,
        limits=ConnectionLimits(max_total=10, max_per_ip=10),
        maillog=MailLog(log),
        log=log,
        clock=clock,
    )
    rules = EnvelopeRules(
        client_ip=CLIENT, accounts=accounts, relay_networks=(ipaddress.ip_network("10.0.0.0/8"),)
    )
    return Transaction(services=services, rules=rules, session_id="s1", client_ip=CLIENT)


def _address(text: str) -> Address:
    local, _, domain = text.partition("@")
    return Address(local, domain)


def _envelope(transaction: Transaction, sender: str, *recipients: str) -> None:
    transaction.hello(events.Ehlo(domain="client.example.test", extended=True))
    transaction.mail(events.Mail(reverse_path=_address(sender)), user=None)
    for recipient in recipients:
        transaction.rcpt(events.Rcpt(forward_path=_address(recipient)), user=None)


async def test_a_message_is_queued_with_its_received_header(
    transaction: Transaction, queue: Queue, records: Records
) -> None:
    _envelope(transaction, "someone@remote.test", "team@example.test", "alice@example.test")
    transaction.data(tls=False, user=None)
    transaction.write(b"Subject: hi\r\n\r\nhello\r\n")
    assert transaction.under_way
    assert transaction.receiving
    commit = transaction.finish(events.EndOfData(size=22), user=None)
    assert not isinstance(commit, Reply)
    reply = await commit
    assert reply.code == 250
    assert not transaction.under_way
    assert transaction.messages == 1
    (queued,) = records.events("message.queued")
    body = queue.spool_path(queued["queue_id"]).read_bytes()
    assert body.startswith(b"Received: from client.example.test")
    assert b"with ESMTP" in body
    assert body.endswith(b"Subject: hi\r\n\r\nhello\r\n")
    due = queue.claim_due(limit=10)
    assert sorted(r.mailbox for r in due) == ["alice@example.test", "bob@example.test"]  # one copy each


async def test_end_of_data_without_a_transaction_is_a_bad_sequence(
    transaction: Transaction, records: Records
) -> None:
    transaction.hello(events.Ehlo(domain="client.example.test", extended=True))
    assert transaction.finish(events.EndOfData(size=22), user=None) == replies.BAD_SEQUENCE
    assert transaction.messages == 0
    assert len(records.events("message.refused")) == 1


async def test_a_refused_body_leaves_nothing_behind(transaction: Transaction, tmp_path: Path) -> None:
    def spooled() -> list[Path]:  # files holding the body (empty ones are made ahead: queue/prepared.py)
        files = (p for p in (tmp_path / "queue").rglob("*") if p.is_file())
        return [p for p in files if b"Subject: hi" in p.read_bytes()]

    _envelope(transaction, "someone@remote.test", "team@example.test")
    transaction.data(tls=False, user=None)
    transaction.write(b"Subject: hi\r\n\r\npart" + b"x" * 70_000)  # past any write buffer
    assert len(spooled()) == 1
    transaction.drop_body()
    assert not transaction.receiving
    assert spooled() == []
    transaction.abort()  # RSET
    assert not transaction.under_way
