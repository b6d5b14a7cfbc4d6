"""outcome.classify: which failures are temporary and which permanent."""

from __future__ import annotations

import errno
import ssl

import pytest

from postroom.delivery.outcome import (
    MailLoopError,
    SpoolFileMissingError,
    classify,
    describe,
    failed,
    replied,
    status_of,
)
from postroom.dns import MxLoop, NoRecords, NullMx, TemporaryDnsError
from postroom.queue import DueRecipient
from postroom.smtp import replies
from postroom.smtp.errors import LocalProtocolError, RemoteProtocolError
from postroom.smtp.types import Reply, Status


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EROFS, errno.ENOTDIR]
)
def test_fixable_storage_errors_are_temporary(code: int) -> None:
    assert classify(OSError(code, "x")) == "temporary"


def test_unfixable_failures_are_permanent() -> None:
    assert classify(OSError(errno.ENAMETOOLONG, "too long")) == "permanent"
    assert classify(ValueError("no domain")) == "permanent"
    assert classify(SpoolFileMissingError("gone")) == "permanent"


def test_bugs_are_temporary_so_the_message_waits() -> None:
    assert classify(KeyError("bug")) == "temporary"


def test_describe_names_the_errno_without_paths() -> None:
    text = describe(OSError(errno.ENOSPC, "No space left on device", "/secret/path"))
    assert text == "No space left on device (ENOSPC)"


def test_failed_builds_the_outcome_for_the_recipient() -> None:
    recipient = DueRecipient("q", 3, "a@x", "a@x", "", 1, 0.0)
    outcome = failed(recipient, OSError(errno.EIO, "I/O error"))
    assert (outcome.queue_id, outcome.idx, outcome.result) == ("q", 3, "temporary")


# --- remote delivery ------------------------------------------------------------------------------------

REMOTE = DueRecipient("q1", 0, "bob@remote.test", "bob@remote.test", "a@ours.test", 1, 0.0, None, "smtp")


@pytest.mark.parametrize(
    ("reply", "result"),
    [
        (Reply(250, Status(2, 0, 0), "Ok"), "delivered"),
        (Reply(451, Status(4, 3, 0), "later"), "temporary"),
        (Reply(550, Status(5, 1, 1), "No such user"), "permanent"),
        (Reply(554, None, "no"), "permanent"),
    ],
)
def test_replies_decide_by_their_class(reply: Reply, result: str) -> None:
    outcome = replied(REMOTE, reply, remote_mta="mx.remote.test")
    assert outcome.result == result
    assert outcome.status == (str(reply.status) if reply.status else "5.0.0")
    if result != "delivered":
        assert outcome.remote_mta == "mx.remote.test"
        assert outcome.diagnostic == str(reply)


def test_dns_answers_carry_their_own_permanence() -> None:
    assert classify(TemporaryDnsError("x.test", "MX", "timed out")) == "temporary"
    assert classify(NoRecords("x.test", "MX", "nx", nxdomain=True)) == "permanent"
    assert failed(REMOTE, NullMx("x.test")).status == "5.1.10"
    assert failed(REMOTE, MxLoop("x.test")).status == "5.4.6"
    assert failed(REMOTE, TemporaryDnsError("x.test", "MX", "t")).status == "4.4.3"


def test_connection_failures_and_protocol_errors() -> None:
    refused = failed(REMOTE, ConnectionRefusedError(errno.ECONNREFUSED, "refused"), remote_mta="mx")
    assert (refused.result, refused.status, refused.remote_mta) == ("temporary", "4.4.1", "mx")
    assert failed(REMOTE, TimeoutError()).status == "4.4.2"
    assert classify(RemoteProtocolError(replies.REMOTE_CLOSED, reason="eof")) == "temporary"
    too_big = LocalProtocolError(replies.REMOTE_MESSAGE_TOO_BIG, reason="over SIZE")
    assert (classify(too_big), status_of(too_big)) == ("permanent", "5.3.4")
    assert classify(MailLoopError("loop")) == "permanent"


def test_tls_failures_are_temporary_though_a_verify_failure_is_also_a_value_error() -> None:
    unverified = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    assert isinstance(unverified, ValueError)
    outcome = failed(REMOTE, unverified, remote_mta="mx")
    assert (outcome.result, outcome.status) == ("temporary", "4.4.1")
    assert classify(ssl.SSLError(1, "handshake failure")) == "temporary"
