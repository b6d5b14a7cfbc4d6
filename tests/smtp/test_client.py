"""ClientConnection as byte transcripts: replies, sequence, pipelining, extensions, DATA, BDAT, STARTTLS, 421;
and whole conversations with our own ServerConnection through ClientServerPair."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.smtp.pair import ClientServerPair, default_answer

from postroom.smtp import replies
from postroom.smtp.client import ClientConnection, ClientReply, ClientSettings, DotStuffer
from postroom.smtp.client_states import ClientState, Command
from postroom.smtp.data import DotReader
from postroom.smtp.errors import LocalProtocolError, RemoteProtocolError
from postroom.smtp.events import NEED_DATA, Bdat, Data, DataChunk, EndOfChunk, EndOfData, Event, Mail, Rcpt
from postroom.smtp.server import ServerConnection, ServerSettings, ServerState
from postroom.smtp.types import Address, Reply, Status

ALL = ("PIPELINING", "SIZE 1000", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "BINARYMIME")
GREETING = replies.greeting("mx.test").to_bytes()
SENDER = Address("a", "sender.test")
BOB = Address("bob", "rcpt.test")
NOBODY = Address("nobody", "rcpt.test")


def ehlo_reply(*keywords: str) -> bytes:
    return replies.ehlo_ok("mx.test", "client.test", list(keywords)).to_bytes()


def connect(greeting: bytes = GREETING) -> ClientConnection:
    conn = ClientConnection(settings=ClientSettings(local_hostname="client.test"))
    conn.receive_data(greeting)
    return conn


def read(conn: ClientConnection, data: bytes = b"") -> list[ClientReply]:
    """Feed ``data``; every reply that is complete now."""
    if data:
        conn.receive_data(data)
    got = []
    while conn.awaiting_replies:
        reply = conn.next_reply()
        if reply is NEED_DATA:
            break
        assert isinstance(reply, ClientReply)
        got.append(reply)
    return got


def greeted(*keywords: str) -> ClientConnection:
    """A client past the greeting and an EHLO answered with ``keywords`` (all of ALL by default)."""
    conn = connect()
    read(conn)
    conn.ehlo()
    assert conn.data_to_send() == b"EHLO client.test\r\n"
    read(conn, ehlo_reply(*(keywords or ALL)))
    assert conn.state is ClientState.READY
    return conn


def in_data(*keywords: str) -> ClientConnection:
    """A client whose DATA was answered 354 for one accepted recipient."""
    conn = greeted(*keywords)
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.data()
    conn.data_to_send()
    read(conn, replies.SENDER_OK.to_bytes() + replies.RECIPIENT_OK.to_bytes() + replies.START_DATA.to_bytes())
    assert conn.state is ClientState.DATA
    return conn


def codes(got: list[ClientReply]) -> list[tuple[Command, int]]:
    return [(item.command, item.reply.code) for item in got]


# --- greeting and EHLO ----------------------------------------------------------------------------


def test_greeting_is_the_first_reply_and_nothing_is_sent_before_it() -> None:
    conn = ClientConnection(settings=ClientSettings(local_hostname="client.test"))
    assert conn.state is ClientState.GREETING
    assert conn.next_reply() is NEED_DATA
    with pytest.raises(LocalProtocolError, match="before the reply to GREETING"):
        conn.ehlo()
    conn.receive_data(GREETING)
    assert read(conn) == [ClientReply(Command.GREETING, Reply(220, None, "mx.test ESMTP postroom"))]
    assert conn.state is ClientState.GREETED
    assert conn.awaiting_replies == 0


def test_554_greeting_allows_only_quit() -> None:
    conn = connect(b"554 5.3.2 No service here\r\n")
    assert read(conn)[0].reply == Reply(554, Status(5, 3, 2), "No service here")
    assert conn.state is ClientState.REFUSED
    with pytest.raises(LocalProtocolError, match="out of sequence"):
        conn.ehlo()
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    assert codes(read(conn, b"221 2.0.0 Bye\r\n")) == [(Command.QUIT, 221)]
    assert conn.closed


def test_421_greeting_closes() -> None:
    conn = connect(replies.TOO_MANY_CONNECTIONS.to_bytes())
    assert read(conn)[0].reply == replies.TOO_MANY_CONNECTIONS
    assert conn.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.next_reply()


def test_ehlo_reply_gives_the_extensions() -> None:
    conn = greeted(
        "pipelining", "SIZE 1000", "AUTH PLAIN LOGIN", "X-Odd  spaced ", "AUTH=LOGIN", "ENHANCEDSTATUSCODES"
    )
    assert dict(conn.extensions) == {
        "PIPELINING": "",
        "SIZE": "1000",
        "AUTH": "PLAIN LOGIN",
        "X-ODD": "spaced",
        "ENHANCEDSTATUSCODES": "",
    }
    assert conn.supports("Pipelining")
    assert not conn.supports("CHUNKING")
    assert conn.max_size == 1000


@pytest.mark.parametrize("keyword", ["SIZE", "SIZE 0", "SIZE lots"])
def test_size_without_a_number_means_no_limit(keyword: str) -> None:
    conn = greeted(keyword)
    assert conn.supports("SIZE")
    assert conn.max_size is None
    conn.mail(SENDER, size=10**9)
    assert conn.data_to_send() == b"MAIL FROM:<a@sender.test> SIZE=1000000000\r\n"


def test_refused_ehlo_falls_back_to_helo() -> None:
    conn = connect()
    read(conn)
    conn.ehlo()
    conn.data_to_send()
    assert codes(read(conn, b"502 5.5.1 What?\r\n")) == [(Command.EHLO, 502)]
    assert conn.state is ClientState.GREETED
    conn.helo()
    assert conn.data_to_send() == b"HELO client.test\r\n"
    assert codes(read(conn, b"250 mx.test\r\n")) == [(Command.HELO, 250)]
    assert conn.state is ClientState.READY
    assert dict(conn.extensions) == {}
    with pytest.raises(LocalProtocolError, match="EHLO"):
        conn.mail(SENDER, extra={"RET": "HDRS"})
    conn.mail(SENDER, size=10, body="7BIT")  # neither SIZE nor 8BITMIME offered: both left out
    assert conn.data_to_send() == b"MAIL FROM:<a@sender.test>\r\n"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"local_hostname": "bad_name"},
        {"local_hostname": ""},
        {"local_hostname": "c.test", "max_reply_line": 100},
    ],
)
def test_settings_are_checked(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="must"):
        ClientSettings(**kwargs)  # type: ignore[arg-type]


def test_address_literal_is_a_valid_local_hostname() -> None:
    conn = ClientConnection(settings=ClientSettings(local_hostname="[192.0.2.1]"))
    conn.receive_data(GREETING)
    read(conn)
    conn.helo()
    assert conn.data_to_send() == b"HELO [192.0.2.1]\r\n"


# --- reply parsing --------------------------------------------------------------------------------


def test_multi_line_reply_is_joined_with_newlines_and_the_status_taken_from_each_line() -> None:
    conn = greeted()
    conn.mail(SENDER)
    got = read(conn, b"550-5.7.1 Go away\r\n550-5.7.1 \r\n550-no status here\r\n550 5.7.1\r\n")
    assert got[0].reply == Reply(550, Status(5, 7, 1), "Go away\n\nno status here\n")


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"250 2.1.0 Sender ok\r\n", Reply(250, Status(2, 1, 0), "Sender ok")),
        (b"250 2.1.0\r\n", Reply(250, Status(2, 1, 0), "")),
        (b"250 Ok\r\n", Reply(250, None, "Ok")),
        (b"250\r\n", Reply(250, None, "")),
        (b"250 \r\n", Reply(250, None, "")),
        (b"250 5.0.0 class does not match\r\n", Reply(250, None, "5.0.0 class does not match")),
        (b"250 2.1.0x not a status\r\n", Reply(250, None, "2.1.0x not a status")),
        (b"250 2.100.999 wide\r\n", Reply(250, Status(2, 100, 999), "wide")),
        (b"250 bare LF is accepted\n", Reply(250, None, "bare LF is accepted")),
        (b"250 caf\xc3\xa9 \xff\r\n", Reply(250, None, "caf\u00e9 \ufffd")),
    ],
)
def test_single_line_replies(line: bytes, expected: Reply) -> None:
    conn = greeted()
    conn.mail(SENDER)
    assert read(conn, line)[0].reply == expected


def test_reply_split_across_receives() -> None:
    conn = greeted()
    conn.mail(SENDER)
    data = b"250-2.1.0 one\r\n250 2.1.0 two\r\n"
    for index in range(len(data) - 1):
        assert read(conn, data[index : index + 1]) == []
    assert read(conn, data[-1:])[0].reply == Reply(250, Status(2, 1, 0), "one\ntwo")


@pytest.mark.parametrize(
    "data",
    [
        b"25O Ok\r\n",
        b"250_Ok\r\n",
        b"250-one\r\n251 two\r\n",
        b"199 too low\r\n",
        b"600 too high\r\n",
        b"ab\r\n",
        b"\r\n",
        b"250 a\rb\r\n",
    ],
)
def test_malformed_replies_raise_remote_protocol_error_and_close(data: bytes) -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.receive_data(data)
    with pytest.raises(RemoteProtocolError) as info:
        conn.next_reply()
    assert info.value.reply == replies.REMOTE_REPLY_MALFORMED
    assert conn.closed
    assert conn.awaiting_replies == 0


def test_reply_lines_and_replies_are_bounded() -> None:
    settings_ = ClientSettings(local_hostname="c.test", max_reply_line=512, max_reply_lines=3)
    for data in [b"250 " + b"x" * 600, b"250 " + b"x" * 600 + b"\r\n", b"250-a\r\n" * 3 + b"250 b\r\n"]:
        conn = ClientConnection(settings=settings_)
        conn.receive_data(data)
        with pytest.raises(RemoteProtocolError, match=r"longer|more than"):
            conn.next_reply()
    conn = ClientConnection(settings=settings_)
    conn.receive_data(
        b"220 " + b"x" * 506 + b"\r\n"
    )  # 512 octets with the CRLF: accepted (RFC 5321 4.5.3.1.5)
    assert read(conn)[0].reply.code == 220


@pytest.mark.parametrize(
    ("command", "data"),
    [("data", b"250 2.0.0 Ok\r\n"), ("mail", b"354 go on\r\n"), ("greeting", b"354 hello\r\n")],
)
def test_a_positive_reply_of_the_wrong_class_is_malformed(command: str, data: bytes) -> None:
    if command == "greeting":
        conn = connect(data)
    else:
        conn = greeted()
        conn.mail(SENDER)
        if command == "data":
            conn.rcpt(BOB)
            conn.data()
            read(conn, replies.SENDER_OK.to_bytes() + replies.RECIPIENT_OK.to_bytes())
        conn.receive_data(data)
    with pytest.raises(RemoteProtocolError, match="not an answer"):
        conn.next_reply()
    assert conn.closed


def test_end_of_input_before_a_reply_raises_remote_closed() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.receive_data(b"250 2.1.0 Ok\r\n250-2.1.5 half")
    conn.receive_data(b"")
    assert codes([conn.next_reply()]) == [(Command.MAIL, 250)]  # type: ignore[list-item]
    with pytest.raises(RemoteProtocolError, match="before answering RCPT") as info:
        conn.next_reply()
    assert info.value.reply == replies.REMOTE_CLOSED
    assert conn.closed
    conn.receive_data(b"more")  # ignored once closed


def test_end_of_input_when_nothing_is_awaited_closes_quietly() -> None:
    conn = greeted()
    conn.receive_data(b"")
    assert conn.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.noop()


def test_next_reply_with_nothing_awaited_is_a_local_error() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="no command is awaiting"):
        conn.next_reply()


def test_data_after_end_of_input_is_a_local_error() -> None:
    conn = greeted()
    conn.noop()
    conn.receive_data(b"")
    with pytest.raises(LocalProtocolError, match="after end of input"):
        conn.receive_data(b"250 Ok\r\n")


# --- sequence -------------------------------------------------------------------------------------


def test_commands_out_of_sequence_raise_and_queue_nothing() -> None:
    conn = connect()
    read(conn)
    with pytest.raises(LocalProtocolError, match="MAIL is out of sequence in state GREETED"):
        conn.mail(SENDER)
    conn = greeted()
    calls: list[Callable[[], None]] = [lambda: conn.rcpt(BOB), conn.data, lambda: conn.bdat(b"x", last=True)]
    for call in calls:
        with pytest.raises(LocalProtocolError, match="out of sequence in state READY"):
            call()
    with pytest.raises(LocalProtocolError, match="send_body"):
        conn.send_body(b"x", final=True)
    assert conn.data_to_send() == b""
    assert conn.awaiting_replies == 0


def test_without_pipelining_every_reply_is_read_before_the_next_command() -> None:
    conn = greeted("SIZE 1000")
    conn.mail(SENDER)
    with pytest.raises(LocalProtocolError, match="no PIPELINING"):
        conn.rcpt(BOB)
    read(conn, replies.SENDER_OK.to_bytes())
    conn.rcpt(BOB)
    assert conn.data_to_send() == b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@rcpt.test>\r\n"


@pytest.mark.parametrize("ender", ["noop", "data", "ehlo", "quit"])
def test_group_enders_must_be_answered_before_more_commands(ender: str) -> None:
    conn = greeted()
    if ender == "data":
        conn.mail(SENDER)
        conn.rcpt(BOB)
    getattr(conn, ender)()
    with pytest.raises(LocalProtocolError, match=f"before the reply to {ender.upper()}"):
        conn.rset()


def test_pipelined_replies_come_back_in_order_with_their_recipients() -> None:
    conn = greeted()
    carol = Address("carol", "rcpt.test")
    conn.mail(SENDER)
    for recipient in (BOB, NOBODY, carol):
        conn.rcpt(recipient)
    conn.data()
    assert conn.awaiting_replies == 5
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@rcpt.test>\r\nRCPT TO:<nobody@rcpt.test>\r\n"
        b"RCPT TO:<carol@rcpt.test>\r\nDATA\r\n"
    )
    server_says = [replies.SENDER_OK, replies.RECIPIENT_OK, replies.NO_SUCH_USER, replies.TOO_MANY_RECIPIENTS]
    got = read(conn, b"".join(reply.to_bytes() for reply in server_says))
    assert [(item.command, item.reply, item.recipient) for item in got] == [
        (Command.MAIL, replies.SENDER_OK, None),
        (Command.RCPT, replies.RECIPIENT_OK, BOB),
        (Command.RCPT, replies.NO_SUCH_USER, NOBODY),
        (Command.RCPT, replies.TOO_MANY_RECIPIENTS, carol),
    ]
    assert conn.accepted_recipients == (BOB,)
    assert conn.state is ClientState.RCPT
    assert codes(read(conn, replies.START_DATA.to_bytes())) == [(Command.DATA, 354)]
    conn.send_body(b"Hi\r\n", final=True)
    conn.mail(SENDER)  # RFC 2920: the next transaction may follow the end of data at once
    assert conn.data_to_send() == b"Hi\r\n.\r\nMAIL FROM:<a@sender.test>\r\n"
    assert codes(read(conn, replies.queued("Q1").to_bytes() + replies.SENDER_OK.to_bytes())) == [
        (Command.END_OF_DATA, 250),
        (Command.MAIL, 250),
    ]
    assert conn.accepted_recipients == ()


def test_pipelined_commands_after_a_refused_mail_are_moot() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.data()
    got = read(conn, b"550 5.7.1 Not you\r\n503 5.5.1 Need MAIL\r\n503 5.5.1 Need RCPT\r\n")
    assert codes(got) == [(Command.MAIL, 550), (Command.RCPT, 503), (Command.DATA, 503)]
    assert conn.state is ClientState.READY
    with pytest.raises(LocalProtocolError, match="RCPT is out of sequence in state READY"):
        conn.rcpt(BOB)
    conn.mail(SENDER)


def test_pipelined_rcpt_is_checked_against_the_refused_mail_at_once() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    read(conn, b"550 5.7.1 Not you\r\n")
    with pytest.raises(LocalProtocolError, match="DATA is out of sequence in state READY"):
        conn.data()  # the RCPT's reply is still due, but the transaction is already known to be gone


def test_354_without_accepted_recipients_is_ended_with_a_single_dot() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(NOBODY)
    conn.data()
    conn.data_to_send()
    read(conn, replies.SENDER_OK.to_bytes() + replies.NO_SUCH_USER.to_bytes() + replies.START_DATA.to_bytes())
    assert conn.state is ClientState.DATA
    assert conn.accepted_recipients == ()
    conn.send_body(b"", final=True)  # RFC 2920 3.1
    assert conn.data_to_send() == b".\r\n"
    assert codes(read(conn, replies.TRANSACTION_FAILED.to_bytes())) == [(Command.END_OF_DATA, 554)]
    assert conn.state is ClientState.READY


def test_refused_data_keeps_the_transaction_and_rset_ends_it() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.data()
    conn.data_to_send()
    read(
        conn,
        replies.SENDER_OK.to_bytes() + replies.RECIPIENT_OK.to_bytes() + replies.QUEUE_UNAVAILABLE.to_bytes(),
    )
    assert conn.state is ClientState.RCPT
    assert conn.accepted_recipients == (BOB,)
    conn.rset()
    assert conn.data_to_send() == b"RSET\r\n"
    read(conn, replies.RESET_OK.to_bytes())
    assert conn.state is ClientState.READY
    assert conn.accepted_recipients == ()


def test_quit_closes_whatever_the_reply() -> None:
    conn = greeted()
    conn.quit()
    assert conn.data_to_send() == b"QUIT\r\n"
    read(conn, b"500 5.5.2 Huh\r\n")
    assert conn.closed


# --- MAIL and RCPT: extensions, parameters, addresses ---------------------------------------------


def test_mail_parameters_follow_the_offered_extensions() -> None:
    conn = greeted()
    conn.mail(None, size=999, body="8bitmime", smtputf8=True, extra={"RET": "HDRS", "ENVID": None})
    assert conn.data_to_send() == b"MAIL FROM:<> SIZE=999 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID\r\n"
    read(conn, replies.SENDER_OK.to_bytes())
    conn.rcpt(Address("j\u00f6rg", "b\u00fccher.test"), extra={"NOTIFY": "NEVER"})
    assert conn.data_to_send() == "RCPT TO:<j\u00f6rg@b\u00fccher.test> NOTIFY=NEVER\r\n".encode()


@pytest.mark.parametrize(
    ("keywords", "kwargs", "reply"),
    [
        (ALL, {"size": 1001}, replies.REMOTE_MESSAGE_TOO_BIG),
        (("8BITMIME",), {"smtputf8": True}, replies.REMOTE_NO_SMTPUTF8),
        (("SMTPUTF8",), {"body": "8BITMIME"}, replies.REMOTE_NO_8BITMIME),
        (("CHUNKING",), {"body": "BINARYMIME"}, replies.REMOTE_NO_BINARYMIME),
        (("BINARYMIME",), {"body": "BINARYMIME"}, replies.REMOTE_NO_BINARYMIME),
    ],
)
def test_what_the_server_cannot_take_is_a_permanent_local_error(
    keywords: tuple[str, ...], kwargs: dict[str, object], reply: Reply
) -> None:
    conn = greeted(*keywords)
    with pytest.raises(LocalProtocolError) as info:
        conn.mail(SENDER, **kwargs)  # type: ignore[arg-type]
    assert info.value.reply == reply
    assert reply.is_permanent
    assert conn.data_to_send() == b""
    assert conn.state is ClientState.READY


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"size": -1}, "negative"),
        ({"body": "9BIT"}, "BODY must be"),
        ({"extra": {"SIZE": "5"}}, "own arguments"),
        ({"extra": {"ret": "A B"}}, "bad MAIL/RCPT parameter"),
        ({"extra": {"RET": "A\r\nRCPT TO:<x@y.test>"}}, "bad MAIL/RCPT parameter"),
        ({"extra": {"X_Y": None}}, "bad MAIL/RCPT parameter"),
        ({"extra": {"RET": "a", "ret": "b"}}, "bad MAIL/RCPT parameter"),
    ],
)
def test_bad_mail_arguments_are_local_errors(kwargs: dict[str, object], match: str) -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError, match=match) as info:
        conn.mail(SENDER, **kwargs)  # type: ignore[arg-type]
    assert info.value.reply == replies.LOCAL_ERROR


@pytest.mark.parametrize(
    ("address", "written"),
    [
        (Address("john.doe", "example.test"), "john.doe@example.test"),
        (Address("john doe", "example.test"), '"john doe"@example.test'),
        (Address('a"b\\c', "example.test"), '"a\\"b\\\\c"@example.test'),
        (Address("x", "[192.0.2.1]"), "x@[192.0.2.1]"),
        (Address("postmaster", ""), "postmaster"),
    ],
)
def test_recipients_are_written_per_rfc_5321(address: Address, written: str) -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(address)
    assert conn.data_to_send().split(b"\r\n")[1] == f"RCPT TO:<{written}>".encode()


@pytest.mark.parametrize(
    "address",
    [
        Address("a\r\nDATA", "b.test"),
        Address("a", "b.test>\r\nDATA"),
        Address("a", ""),
        Address("", "b.test"),
        Address("a" * 65, "b.test"),
        Address("a", "bad_domain"),
        Address("a", "b.test> SIZE=1"),
    ],
)
def test_addresses_that_would_not_read_back_are_refused(address: Address) -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="address"):
        conn.mail(address)
    conn.mail(SENDER)
    with pytest.raises(LocalProtocolError, match="address"):
        conn.rcpt(address)
    assert conn.data_to_send() == b"MAIL FROM:<a@sender.test>\r\n"


def test_postmaster_is_not_a_sender() -> None:
    with pytest.raises(LocalProtocolError, match="address"):
        greeted().mail(Address("Postmaster", ""))


def test_non_ascii_addresses_need_smtputf8_on_mail() -> None:
    conn = greeted()
    with pytest.raises(LocalProtocolError, match="smtputf8=True"):
        conn.mail(Address("j\u00f6rg", "b.test"))
    conn.mail(SENDER)
    with pytest.raises(LocalProtocolError, match="smtputf8=True"):
        conn.rcpt(Address("a", "b\u00fccher.test"))


def test_binarymime_must_be_sent_with_bdat() -> None:
    conn = greeted()
    conn.mail(SENDER, body="BINARYMIME")
    conn.rcpt(BOB)
    with pytest.raises(LocalProtocolError, match="BDAT"):
        conn.data()
    conn.bdat(b"\x00\xff", last=True)
    assert conn.data_to_send().endswith(b"BDAT 2 LAST\r\n\x00\xff")


# --- DATA -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chunks", "wire"),
    [
        ([b"Subject: x\r\n\r\nbody\r\n"], b"Subject: x\r\n\r\nbody\r\n.\r\n"),
        ([b".leading dot\r\n.\r\n..two\r\n"], b"..leading dot\r\n..\r\n...two\r\n.\r\n"),
        ([b"a\r\n", b".b\r", b"\n.", b"c\r\n"], b"a\r\n..b\r\n..c\r\n.\r\n"),
        ([b"no final line end"], b"no final line end\r\n.\r\n"),
        ([b"ends with CR\r"], b"ends with CR\r\n.\r\n"),
        ([], b".\r\n"),
        ([b"", b""], b".\r\n"),
        ([b"bare\nLF\n.\n"], b"bare\r\nLF\r\n..\r\n.\r\n"),
        ([b"bare\rCR\r.x"], b"bare\r\nCR\r\n..x\r\n.\r\n"),
        (
            [b"smuggle\r\n", b"\n.\r\nMAIL FROM:<x@y.test>\r\n"],
            b"smuggle\r\n\r\n..\r\nMAIL FROM:<x@y.test>\r\n.\r\n",
        ),
        ([b"x\r", b"\r", b"\n"], b"x\r\n\r\n.\r\n"),
    ],
)
def test_body_is_stuffed_normalised_and_terminated(chunks: list[bytes], wire: bytes) -> None:
    conn = in_data()
    for chunk in chunks:
        conn.send_body(chunk, final=False)
    conn.send_body(b"", final=True)
    assert conn.data_to_send() == wire
    assert conn.awaiting_replies == 1
    with pytest.raises(LocalProtocolError, match="send_body"):
        conn.send_body(b"more", final=True)
    assert codes(read(conn, replies.queued("Q1").to_bytes())) == [(Command.END_OF_DATA, 250)]
    assert conn.state is ClientState.READY


def test_body_may_not_be_sent_before_the_354() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.data()
    with pytest.raises(LocalProtocolError, match="send_body"):
        conn.send_body(b"too early", final=False)


_body_lines = st.lists(
    st.binary(max_size=30).map(lambda line: line.replace(b"\r", b"").replace(b"\n", b""))
    | st.sampled_from([b".", b"..", b".x", b""]),
    max_size=20,
)


@settings(max_examples=150, deadline=None)
@given(lines=_body_lines, cuts=st.lists(st.integers(min_value=0, max_value=700), max_size=8))
def test_any_crlf_body_in_any_chunks_reaches_our_server_unchanged(
    lines: list[bytes], cuts: list[int]
) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    pair = ClientServerPair()
    pair.exchange()
    pair.client.ehlo()
    pair.exchange()
    pair.client.mail(SENDER, body="8BITMIME")
    pair.client.rcpt(BOB)
    pair.client.data()
    pair.exchange()
    points = sorted({min(cut, len(body)) for cut in cuts})
    for start, end in zip([0, *points], [*points, len(body)], strict=True):
        pair.client.send_body(body[start:end], final=False)
    pair.client.send_body(b"", final=True)
    got = pair.exchange()
    assert pair.body() == body
    assert got[-1].reply == replies.queued("Q1")
    assert pair.events[-1] == EndOfData(len(body))


@settings(max_examples=150, deadline=None)
@given(pieces=st.lists(st.binary(max_size=40) | st.sampled_from([b"\r", b"\n", b".", b"\r\n."]), max_size=12))
def test_any_bytes_are_sent_as_a_well_formed_body(pieces: list[bytes]) -> None:
    stuffer = DotStuffer()
    wire = b"".join(stuffer.feed(piece) for piece in pieces) + stuffer.end()
    reader = DotReader(max_size=0, normalize=False, reject_long_lines=False)
    out, rest = reader.feed(wire)
    data = b"".join(pieces)
    expected = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")
    if expected and not expected.endswith(b"\r\n"):
        expected += b"\r\n"
    assert (out, rest, reader.problem) == (expected, b"", None)  # ends exactly at the end, no bare CR/LF


# --- BDAT -----------------------------------------------------------------------------------------


def test_bdat_chunks_are_framed_raw_and_may_be_pipelined() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.bdat(b".\r\nQUIT\r\n", last=False)
    conn.bdat(b"\n.\n", last=True)
    assert conn.data_to_send() == (
        b"MAIL FROM:<a@sender.test>\r\nRCPT TO:<bob@rcpt.test>\r\nBDAT 9\r\n.\r\nQUIT\r\nBDAT 3 LAST\r\n\n.\n"
    )
    got = read(conn, b"250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n250 2.0.0 Chunk\r\n")
    assert conn.state is ClientState.BDAT
    got += read(conn, replies.queued("Q1").to_bytes())
    assert codes(got)[2:] == [(Command.BDAT, 250), (Command.BDAT_LAST, 250)]
    assert conn.state is ClientState.READY


def test_refused_chunk_ends_the_transaction() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.bdat(b"abc", last=False)
    conn.bdat(b"def", last=False)
    got = read(conn, b"250 Ok\r\n250 Ok\r\n452 4.3.1 Full\r\n503 5.5.1 Need RCPT\r\n")
    assert codes(got)[2:] == [(Command.BDAT, 452), (Command.BDAT, 503)]
    assert conn.state is ClientState.READY
    with pytest.raises(LocalProtocolError, match="BDAT_LAST is out of sequence in state READY"):
        conn.bdat(b"", last=True)


def test_bdat_needs_chunking_and_excludes_data() -> None:
    conn = greeted("PIPELINING")
    conn.mail(SENDER)
    conn.rcpt(BOB)
    with pytest.raises(LocalProtocolError, match="CHUNKING"):
        conn.bdat(b"x", last=True)
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.bdat(b"x", last=False)
    with pytest.raises(LocalProtocolError, match="DATA is out of sequence in state BDAT"):
        conn.data()
    with pytest.raises(LocalProtocolError, match="RCPT is out of sequence in state BDAT"):
        conn.rcpt(NOBODY)


# --- STARTTLS -------------------------------------------------------------------------------------


def test_starttls_resets_to_greeted_and_forgets_the_extensions() -> None:
    conn = greeted(*ALL, "STARTTLS")
    conn.starttls()
    assert conn.data_to_send() == b"STARTTLS\r\n"
    with pytest.raises(LocalProtocolError, match="before the reply to STARTTLS"):
        conn.ehlo()
    read(conn, replies.START_TLS_READY.to_bytes())
    assert conn.state is ClientState.TLS_PENDING
    with pytest.raises(LocalProtocolError, match="TLS handshake"):
        conn.receive_data(b"250 injected\r\n")
    with pytest.raises(LocalProtocolError, match="out of sequence in state TLS_PENDING"):
        conn.mail(SENDER)
    conn.tls_started()
    assert (conn.state, conn.tls_active, dict(conn.extensions)) == (ClientState.GREETED, True, {})
    with pytest.raises(LocalProtocolError, match="out of sequence in state GREETED"):
        conn.mail(SENDER)
    conn.ehlo()
    read(conn, ehlo_reply("PIPELINING", "STARTTLS"))
    with pytest.raises(LocalProtocolError, match="already active"):
        conn.starttls()
    with pytest.raises(LocalProtocolError, match="tls_started"):
        conn.tls_started()


def test_replies_read_with_the_220_are_discarded() -> None:
    conn = greeted(*ALL, "STARTTLS")
    conn.starttls()
    read(conn, replies.START_TLS_READY.to_bytes() + b"250-injected\r\n250 PIPELINING\r\n")
    conn.tls_started()
    conn.ehlo()
    assert read(conn) == []
    assert codes(read(conn, ehlo_reply("SIZE"))) == [(Command.EHLO, 250)]
    assert dict(conn.extensions) == {"SIZE": ""}


def test_starttls_must_be_offered_and_may_be_refused() -> None:
    with pytest.raises(LocalProtocolError, match="does not offer STARTTLS"):
        greeted().starttls()
    conn = greeted("STARTTLS")
    conn.starttls()
    read(conn, b"454 4.7.0 TLS not available\r\n")
    assert conn.state is ClientState.READY
    conn.mail(SENDER)


# --- 421 ------------------------------------------------------------------------------------------


def test_421_mid_transaction_closes_and_drops_the_awaited_replies() -> None:
    conn = greeted()
    conn.mail(SENDER)
    conn.rcpt(BOB)
    conn.rcpt(NOBODY)
    got = read(conn, replies.SENDER_OK.to_bytes() + replies.SHUTTING_DOWN.to_bytes() + b"250 late\r\n")
    assert [(item.command, item.reply, item.recipient) for item in got] == [
        (Command.MAIL, replies.SENDER_OK, None),
        (Command.RCPT, replies.SHUTTING_DOWN, BOB),
    ]
    assert conn.closed
    assert conn.awaiting_replies == 0
    assert conn.accepted_recipients == ()
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.rset()


def test_421_in_reply_to_the_end_of_data_closes() -> None:
    conn = in_data()
    conn.send_body(b"x\r\n", final=True)
    assert read(conn, replies.DATA_TIMEOUT.to_bytes())[0].command is Command.END_OF_DATA
    assert conn.closed


# --- both sides: ClientServerPair -----------------------------------------------------------------


def refuse_nobody(server: ServerConnection, event: Event) -> Reply:
    if isinstance(event, Rcpt) and event.forward_path == NOBODY:
        return replies.NO_SUCH_USER
    return default_answer(server, event)


def test_full_conversation_with_our_server() -> None:
    pair = ClientServerPair(answer=refuse_nobody)
    client = pair.client
    assert codes(pair.exchange()) == [(Command.GREETING, 220)]
    client.ehlo()
    assert codes(pair.exchange()) == [(Command.EHLO, 250)]
    assert client.supports("PIPELINING")
    assert client.max_size == 52_428_800
    client.mail(SENDER, size=20)
    client.rcpt(BOB)
    client.rcpt(NOBODY)
    client.data()
    got = pair.exchange()
    assert [(item.command, item.reply, item.recipient) for item in got] == [
        (Command.MAIL, replies.SENDER_OK, None),
        (Command.RCPT, replies.RECIPIENT_OK, BOB),
        (Command.RCPT, replies.NO_SUCH_USER, NOBODY),
        (Command.DATA, replies.START_DATA, None),
    ]
    assert client.accepted_recipients == (BOB,)
    client.send_body(b"Subject: hi\r\n\r\n.dot\r\n", final=False)
    client.send_body(b"bye", final=True)
    client.quit()
    got = pair.exchange()
    assert [(item.command, item.reply) for item in got] == [
        (Command.END_OF_DATA, replies.queued("Q1")),
        (Command.QUIT, replies.closing("mx.test")),
    ]
    assert client.closed
    assert pair.server.closed
    assert pair.body() == b"Subject: hi\r\n\r\n.dot\r\nbye\r\n"
    kinds = [type(event).__name__ for event in pair.events if not isinstance(event, DataChunk)]
    assert kinds == ["Ehlo", "Mail", "Rcpt", "Rcpt", "Data", "EndOfData", "Quit"]
    mail = pair.events[1]
    assert isinstance(mail, Mail)
    assert (mail.reverse_path, mail.size) == (SENDER, 20)
    assert pair.to_server[1:] == [  # pipelined: the envelope in one piece, then the body, its end and QUIT
        b"MAIL FROM:<a@sender.test> SIZE=20\r\nRCPT TO:<bob@rcpt.test>\r\n"
        b"RCPT TO:<nobody@rcpt.test>\r\nDATA\r\n",
        b"Subject: hi\r\n\r\n..dot\r\nbye\r\n.\r\nQUIT\r\n",
    ]


def test_bdat_conversation_with_our_server() -> None:
    pair = ClientServerPair()
    pair.exchange()
    pair.client.ehlo()
    pair.exchange()
    pair.client.mail(None, body="BINARYMIME")
    pair.client.rcpt(BOB)
    pair.client.bdat(b"\x00\r\n.\r\n", last=False)
    pair.client.bdat(b"\xff", last=True)
    got = pair.exchange()
    assert codes(got) == [
        (Command.MAIL, 250),
        (Command.RCPT, 250),
        (Command.BDAT, 250),
        (Command.BDAT_LAST, 250),
    ]
    assert pair.body() == b"\x00\r\n.\r\n\xff"
    assert [event for event in pair.events if isinstance(event, Bdat | EndOfChunk)] == [
        Bdat(6, False),
        EndOfChunk(6, False),
        Bdat(1, True),
        EndOfChunk(7, True),
    ]
    assert pair.client.state is ClientState.READY
    assert pair.server.state is ServerState.READY


def test_starttls_conversation_with_our_server() -> None:
    pair = ClientServerPair(server=ServerSettings(hostname="mx.test", starttls=True))
    pair.exchange()
    pair.client.ehlo()
    pair.exchange()
    pair.client.starttls()
    assert codes(pair.exchange()) == [(Command.STARTTLS, 220)]
    assert pair.server.state is ServerState.TLS_PENDING
    pair.start_tls()
    pair.client.ehlo()
    pair.exchange()
    assert pair.client.tls_active
    assert not pair.client.supports("STARTTLS")
    pair.client.mail(SENDER)
    assert codes(pair.exchange()) == [(Command.MAIL, 250)]


def test_our_server_refusing_data_and_closing_with_421() -> None:
    def answer(server: ServerConnection, event: Event) -> Reply:
        if isinstance(event, Data):
            return replies.SHUTTING_DOWN
        return default_answer(server, event)

    pair = ClientServerPair(answer=answer)
    pair.exchange()
    pair.client.ehlo()
    pair.exchange()
    pair.client.mail(SENDER)
    pair.client.rcpt(BOB)
    pair.client.data()
    assert codes(pair.exchange())[-1] == (Command.DATA, 421)
    assert pair.client.closed
    assert pair.server.closed


# --- fuzzing --------------------------------------------------------------------------------------

_REPLY_FRAGMENTS = [
    b"220 mx.test\r\n", b"250-mx.test\r\n", b"250-PIPELINING\r\n", b"250 CHUNKING\r\n", b"250 2.0.0 Ok\r\n",
    b"354 go\r\n", b"421 4.3.2 bye\r\n", b"550 5.1.1 no\r\n", b"220 2.0.0 TLS\r\n", b"221 bye\r\n",
    b"\r\n", b"\n", b"\r", b"-", b" ", b"2", b"\xff",
]  # fmt: skip
_server_bytes = st.lists(
    st.lists(st.sampled_from(_REPLY_FRAGMENTS) | st.binary(max_size=10), max_size=6).map(b"".join),
    max_size=10,
)
_ACTIONS = ["ehlo", "helo", "mail", "rcpt", "data", "body", "bdat", "rset", "noop", "quit", "starttls", "tls"]


def _act(conn: ClientConnection, action: str) -> None:
    calls: dict[str, Callable[[], None]] = {
        "ehlo": conn.ehlo, "helo": conn.helo, "mail": lambda: conn.mail(SENDER), "rset": conn.rset,
        "rcpt": lambda: conn.rcpt(BOB), "data": conn.data, "noop": conn.noop, "quit": conn.quit,
        "body": lambda: conn.send_body(b".x\r\n", final=True), "bdat": lambda: conn.bdat(b"xy", last=False),
        "starttls": conn.starttls, "tls": conn.tls_started,
    }  # fmt: skip
    calls[action]()


@settings(max_examples=200, deadline=None)
@given(pieces=_server_bytes, actions=st.lists(st.sampled_from(_ACTIONS), max_size=12))
def test_no_server_input_makes_the_client_fail_other_than_by_protocol_error(
    pieces: list[bytes], actions: list[str]
) -> None:
    conn = ClientConnection(settings=ClientSettings(local_hostname="c.test", max_reply_line=512))
    for piece, action in zip(pieces, [*actions, *[""] * len(pieces)], strict=False):
        try:
            if action:
                _act(conn, action)
            conn.data_to_send()
            conn.receive_data(piece)
            while conn.awaiting_replies and conn.next_reply() is not NEED_DATA:
                pass
        except LocalProtocolError:
            continue  # what a careless driver gets: refused, nothing changed
        except RemoteProtocolError:
            assert conn.closed
            return
    assert isinstance(conn.state, ClientState)
