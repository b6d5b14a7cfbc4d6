"""Open-relay tricks on the MX port from an unauthenticated stranger: every one is refused with a proper
reply, nothing is queued for another domain, and the server answers normally after each."""

from __future__ import annotations

import fnmatch
from collections.abc import Iterator

import pytest

from tests.e2e.conftest import add_accounts
from tests.helpers.server import ServerThread, maildir_messages, make_config, server_thread, wait_for
from tests.helpers.transcript import Transcript


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    """postroom.test and other.test are local; victim.test is somebody else's."""
    config = make_config(tmp_path_factory.mktemp("relay"))
    add_accounts(config)
    with server_thread(config) as running:
        yield running


TRICKS = [
    # The plain attempt and its spellings.
    ("<user@victim.test>", "554 5.7.1 *"),
    ("<user@VICTIM.TEST>", "554 5.7.1 *"),
    ("<user@victim.test.>", "501 5.1.3 *"),  # a trailing dot is not in the RFC 5321 grammar
    ("<user@postroom.test.victim.test>", "554 5.7.1 *"),
    # Percent hack and bang paths at a local domain: unknown users here, never forwarded.
    ("<user%victim.test@postroom.test>", "550 5.1.1 *"),
    ("<user%victim.test@postroom.test.>", "501 5.1.3 *"),
    ("<USER%VICTIM.TEST@POSTROOM.TEST>", "550 5.1.1 *"),
    ("<postmaster%victim.test@postroom.test>", "550 5.1.1 *"),
    ("<user%victim.test%other.test@postroom.test>", "550 5.1.1 *"),
    ("<victim.test!user@postroom.test>", "550 5.1.1 *"),
    ("<victim.test!user%other.test@postroom.test>", "550 5.1.1 *"),
    ("<user@victim.test%postroom.test>", "501 5.1.3 *"),
    # Quoted "@" in the local part.
    ('<"user@victim.test"@postroom.test>', "550 5.1.1 *"),
    ('<"user\\@victim.test"@postroom.test>', "550 5.1.1 *"),
    ('<"user%victim.test"@postroom.test>', "550 5.1.1 *"),
    ('<"user@victim.test">', "501 5.1.3 *"),
    ("<user@victim.test@postroom.test>", "501 5.1.3 *"),
    # Source routes through us to somebody else (RFC 5321 3.6.1: not used for routing).
    ("<@postroom.test:user@victim.test>", "554 5.7.1 Source routes *"),
    ("<@postroom.test,@mx.victim.test:user@victim.test>", "554 5.7.1 Source routes *"),
    ("<@[127.0.0.1]:user@victim.test>", "501 5.1.3 *"),  # A-d-l names domains, never literals
    # Address literals, ours or not.
    ("<user@[127.0.0.1]>", "554 5.7.1 *"),
    ("<user@[192.0.2.1]>", "554 5.7.1 *"),
    ("<user@[IPv6:::1]>", "554 5.7.1 *"),
    ("<user%victim.test@[127.0.0.1]>", "554 5.7.1 *"),
    # <> tricks.
    ("<>", "501 5.1.3 *"),
    ("<<user@victim.test>>", "501 5.1.3 *"),
    ("<user@victim.test", "501 5.1.3 *"),
    ("user@victim.test", "501 5.5.4 *"),
    ("<@victim.test>", "501 5.1.3 *"),
]


def _mail_from(t: Transcript, sender: str) -> None:
    t.send(f"MAIL FROM:{sender}")
    t.expect("250 2.1.0 *")


@pytest.mark.parametrize("sender", ["<spammer@victim.test>", "<>", "<alice@postroom.test>"])
@pytest.mark.parametrize(("recipient", "expected"), TRICKS)
def test_relay_trick_is_refused(mx: ServerThread, sender: str, recipient: str, expected: str) -> None:
    with Transcript(mx.address) as t:
        t.expect("220 *")
        t.send("EHLO stranger.test")
        t.expect("250 *")
        _mail_from(t, sender)
        t.send(f"RCPT TO:{recipient}")
        reply = t.read_reply()
        assert fnmatch.fnmatchcase(reply, expected), reply
        assert reply[0] in "45"
        # Nothing was accepted: no message can follow, and the session goes on as normal.
        t.send("DATA")
        t.expect("503 5.5.1 *")
        t.send("RSET")
        t.expect("250 *")
        _mail_from(t, "<friend@victim.test>")
        t.send("RCPT TO:<alice@postroom.test>")
        t.expect("250 2.1.5 *")
        t.send("QUIT")
        t.expect("221 *")


def test_nothing_went_to_another_domain(mx: ServerThread) -> None:
    """After every trick above, a message to addresses that are fine (local ones, however spelled) is
    delivered here, and the queue empties without one delivery event for another domain."""
    with Transcript(mx.address) as t:
        t.expect("220 *")
        t.send("EHLO stranger.test")
        t.expect("250 *")
        _mail_from(t, "<spammer@victim.test>")
        for recipient in (
            "<alice@POSTROOM.TEST>",
            "<alice+x%victim.test@postroom.test>",  # user+tag: alice, whatever the tag says
            "<@victim.test:bob@postroom.test>",  # a source route ending here: the route is ignored
            "<Postmaster>",
        ):
            t.send(f"RCPT TO:{recipient}")
            t.expect("250 2.1.5 *")  # local mailboxes: delivered here, never forwarded
        t.send("DATA")
        t.expect("354 *")
        t.send_raw(b"Subject: tricks\r\n\r\nhi\r\n.\r\n")
        t.expect("250 2.0.0 *")
    assert mx.app is not None
    wait_for(lambda: maildir_messages(mx.config, "bob@postroom.test"), what="local delivery")
    wait_for(lambda: mx.call(mx.app.queue.message_count) == 0, what="an empty queue")  # type: ignore[union-attr]
    deliveries = [line for line in mx.log_text.splitlines() if " delivery." in line]
    assert deliveries
    assert not [line for line in deliveries if "transport=local" not in line or "victim.test" in line]

