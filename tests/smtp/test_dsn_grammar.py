"""The DSN extension's parameters (RFC 3461) in the grammar and on the server side: pure, no sockets."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.smtp import replies
from postroom.smtp.errors import RemoteProtocolError
from postroom.smtp.events import CommandError, Mail, Rcpt
from postroom.smtp.grammar import parse_mail, parse_rcpt
from postroom.smtp.server import ServerConnection, ServerSettings
from postroom.smtp.types import Reply
from postroom.smtp.xtext import decode_xtext, encode_xtext


def _refusal(parse: object, args: str) -> Reply:
    with pytest.raises(RemoteProtocolError) as info:
        parse(args)  # type: ignore[operator]
    return info.value.reply


def test_mail_ret_and_envid_are_parsed_and_envid_decoded() -> None:
    mail = parse_mail("FROM:<a@b.test> RET=hdrs ENVID=QQ314159+2Bx")
    assert (mail.ret, mail.envid) == ("HDRS", "QQ314159+x")
    plain = parse_mail("FROM:<a@b.test>")
    assert (plain.ret, plain.envid) == (None, None)


def test_rcpt_notify_is_kept_in_canonical_order_and_orcpt_decoded() -> None:
    rcpt = parse_rcpt("TO:<a@b.test> NOTIFY=delay,Success ORCPT=RFC822;Bob+2Bx@b.test")
    assert rcpt.notify == ("SUCCESS", "DELAY")
    assert rcpt.orcpt == ("rfc822", "Bob+x@b.test")
    assert parse_rcpt("TO:<a@b.test> NOTIFY=NEVER").notify == ("NEVER",)
    assert parse_rcpt("TO:<a@b.test>").notify is None


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        ("FROM:<a@b.test> RET=BODY", replies.BAD_RET_PARAMETER),
        ("FROM:<a@b.test> RET", replies.BAD_RET_PARAMETER),
        ("FROM:<a@b.test> ENVID", replies.BAD_ENVID_PARAMETER),
        ("FROM:<a@b.test> ENVID=a+2", replies.BAD_ENVID_PARAMETER),  # a cut-off hexchar
        ("FROM:<a@b.test> ENVID=a+2b", replies.BAD_ENVID_PARAMETER),  # hex digits are upper case
        ("FROM:<a@b.test> ENVID=a+0Ab", replies.BAD_ENVID_PARAMETER),  # decodes to a line feed
        ("FROM:<a@b.test> ENVID=" + "x" * 101, replies.BAD_ENVID_PARAMETER),
    ],
)
def test_bad_mail_dsn_parameters_are_501(args: str, reply: Reply) -> None:
    assert _refusal(parse_mail, args) == reply


@pytest.mark.parametrize(
    ("args", "reply"),
    [
        ("TO:<a@b.test> NOTIFY=NEVER,SUCCESS", replies.BAD_NOTIFY_PARAMETER),
        ("TO:<a@b.test> NOTIFY=SUCCESS,SUCCESS", replies.BAD_NOTIFY_PARAMETER),
        ("TO:<a@b.test> NOTIFY=ALWAYS", replies.BAD_NOTIFY_PARAMETER),
        ("TO:<a@b.test> NOTIFY", replies.BAD_NOTIFY_PARAMETER),
        ("TO:<a@b.test> NOTIFY=SUCCESS,", replies.BAD_NOTIFY_PARAMETER),
        ("TO:<a@b.test> ORCPT=a@b.test", replies.BAD_ORCPT_PARAMETER),  # no address type
        ("TO:<a@b.test> ORCPT=rfc822;", replies.BAD_ORCPT_PARAMETER),
        ("TO:<a@b.test> ORCPT=rfc_822;a@b.test", replies.BAD_ORCPT_PARAMETER),
        ("TO:<a@b.test> ORCPT=rfc822;a+0D+0A@b.test", replies.BAD_ORCPT_PARAMETER),
    ],
)
def test_bad_rcpt_dsn_parameters_are_501(args: str, reply: Reply) -> None:
    assert _refusal(parse_rcpt, args) == reply


def test_the_server_offers_dsn_and_takes_its_parameters_after_ehlo_only() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.send(replies.greeting("mx.test"))
    assert "DSN" in conn.ehlo_keywords()
    conn.receive_data(b"HELO c.test\r\nMAIL FROM:<a@b.test> RET=FULL\r\n")
    conn.send(conn.default_reply(conn.next_event()))
    refused = conn.next_event()
    assert isinstance(refused, CommandError)
    assert refused.reply == replies.UNKNOWN_PARAMETER
    conn.send(refused.reply)
    conn.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@b.test> RET=FULL ENVID=e1\r\n")
    conn.receive_data(b"RCPT TO:<c@d.test> NOTIFY=NEVER\r\n")
    conn.send(conn.default_reply(conn.next_event()))
    mail = conn.next_event()
    assert isinstance(mail, Mail)
    assert (mail.ret, mail.envid) == ("FULL", "e1")
    conn.send(conn.default_reply(mail))
    rcpt = conn.next_event()
    assert isinstance(rcpt, Rcpt)
    assert rcpt.notify == ("NEVER",)


@settings(max_examples=200)
@given(value=st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40))
def test_xtext_encoding_round_trips_printable_ascii(value: str) -> None:
    encoded = encode_xtext(value)
    assert " " not in encoded
    assert "=" not in encoded
    assert decode_xtext(encoded) == value
