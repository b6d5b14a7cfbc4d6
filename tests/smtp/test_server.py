"""ServerConnection as byte transcripts: sequence, pipelining, limits, STARTTLS, AUTH, DATA, BDAT."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.smtp import replies
from postroom.smtp.errors import LocalProtocolError
from postroom.smtp.events import (
    NEED_DATA,
    Auth,
    AuthResponse,
    Bdat,
    CommandError,
    Data,
    DataChunk,
    EndOfChunk,
    EndOfData,
    Event,
    Mail,
    Noop,
    Rcpt,
    StartTls,
)
from postroom.smtp.server import ServerConnection, ServerSettings, ServerState
from postroom.smtp.types import Address, Reply, Status

Talker = Callable[..., Any]  # the ``talk`` fixture: builds a greeted conversation (see conftest.py)


def code(reply: Reply) -> str:
    """The start of ``reply`` on the wire, e.g. '503 5.5.1'."""
    return f"{reply.code} {reply.status}" if reply.status else str(reply.code)


# --- greeting -------------------------------------------------------------------------------------


def test_next_event_before_the_greeting_is_a_local_protocol_error() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.receive_data(b"EHLO x\r\n")
    with pytest.raises(LocalProtocolError):
        conn.next_event()


def test_greeting_is_formatted_and_moves_to_greeted() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    assert conn.send(replies.greeting("mx.test")) == b"220 mx.test ESMTP postroom\r\n"
    assert conn.state is ServerState.GREETED


def test_554_greeting_answers_everything_but_quit_with_503() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.send(Reply(554, Status(5, 3, 2), "No service"))
    conn.receive_data(b"EHLO client.test\r\nQUIT\r\n")
    event = conn.next_event()
    assert event == CommandError(replies.BAD_SEQUENCE, reason="EHLO out of sequence")
    conn.send(conn.default_reply(event))
    quit_event = conn.next_event()
    assert conn.send(conn.default_reply(quit_event)).startswith(b"221 2.0.0")
    assert conn.closed


def test_421_greeting_closes() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.send(replies.TOO_MANY_CONNECTIONS)
    assert conn.closed
    assert conn.next_event() is NEED_DATA


# --- EHLO / HELO ----------------------------------------------------------------------------------


def test_ehlo_lists_the_extensions(talk: Talker) -> None:
    t = talk(max_message_size=1000)
    assert t.say("EHLO client.test").split("\r\n") == [
        "250-mx.test greets client.test",
        "250-PIPELINING",
        "250-SIZE 1000",
        "250-8BITMIME",
        "250-SMTPUTF8",
        "250-ENHANCEDSTATUSCODES",
        "250-DSN",
        "250-CHUNKING",
        "250 BINARYMIME",
    ]
    assert t.conn.state is ServerState.READY


def test_ehlo_keywords_follow_settings_and_tls() -> None:
    conn = ServerConnection(
        settings=ServerSettings(
            hostname="mx.test",
            max_message_size=0,
            chunking=False,
            starttls=True,
            auth_mechanisms=("PLAIN", "LOGIN"),
        )
    )
    assert conn.ehlo_keywords() == [
        "PIPELINING",
        "SIZE",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "DSN",
        "STARTTLS",
    ]
    plain_auth = ServerConnection(
        settings=ServerSettings(hostname="h", auth_mechanisms=("PLAIN",), auth_without_tls=True)
    )
    assert plain_auth.ehlo_keywords()[-1] == "AUTH PLAIN"


def test_helo_reply_has_no_extensions(talk: Talker) -> None:
    assert talk().say("helo client.test") == "250 mx.test greets client.test"


@pytest.mark.parametrize("line", ["EHLO", "EHLO ", "HELO bad_name", "EHLO a b"])
def test_ehlo_without_a_valid_domain_is_501_5_5_4(talk: Talker, line: str) -> None:
    assert talk().say(line).startswith("501 5.5.4")


def test_ehlo_may_be_repeated_and_resets_the_transaction(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.conn.recipient_count == 1
    assert t.say("EHLO again.test").startswith("250-")
    assert t.conn.state is ServerState.READY
    assert t.conn.recipient_count == 0
    assert t.say("RCPT TO:<b@rcpt.test>").startswith(code(replies.NEED_MAIL))


# --- sequence -------------------------------------------------------------------------------------


def test_mail_before_ehlo_is_503_5_5_1(talk: Talker) -> None:
    assert talk().say("MAIL FROM:<a@b.test>") == str(replies.NEED_HELO)


def test_rcpt_before_mail_is_503_5_5_1(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    assert t.say("RCPT TO:<a@b.test>") == str(replies.NEED_MAIL)


def test_data_before_rcpt_is_503_5_5_1(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    assert t.say("DATA") == str(replies.NEED_RCPT)
    t.say("MAIL FROM:<a@b.test>")
    assert t.say("DATA") == str(replies.NEED_RCPT)


def test_second_mail_is_503_nested(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.say("MAIL FROM:<a@b.test>") == str(replies.NESTED_MAIL)


def test_rset_clears_the_transaction(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.say("RSET") == str(replies.RESET_OK)
    assert (t.conn.state, t.conn.recipient_count) == (ServerState.READY, 0)
    assert t.say("MAIL FROM:<>").startswith("250")


def test_refused_rcpt_does_not_count_and_refused_mail_does_not_start_a_transaction() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.send(replies.greeting("mx.test"))
    conn.receive_data(
        b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<x@y.test>\r\n"
    )
    conn.send(conn.default_reply(conn.next_event()))
    assert isinstance(conn.next_event(), Mail)
    conn.send(replies.RELAY_DENIED)
    assert conn.state is ServerState.READY
    conn.send(conn.default_reply(conn.next_event()))
    assert isinstance(conn.next_event(), Rcpt)
    conn.send(replies.NO_SUCH_USER)
    assert (conn.state, conn.recipient_count) == (ServerState.MAIL, 0)


# --- individual commands --------------------------------------------------------------------------


def test_commands_are_case_insensitive(talk: Talker) -> None:
    t = talk()
    assert t.say("eHlO client.test").startswith("250-")
    assert t.say("mail from:<a@b.test>").startswith("250 2.1.0")
    assert t.say("Rcpt To:<c@d.test>").startswith("250 2.1.5")
    assert t.say("noop") == str(replies.NOOP_OK)


def test_noop_accepts_an_argument(talk: Talker) -> None:
    t = talk()
    assert t.say("NOOP whatever you like") == str(replies.NOOP_OK)
    assert isinstance(t.events[-1], Noop)


def test_vrfy_is_252_and_needs_an_argument(talk: Talker) -> None:
    t = talk()
    assert t.say("VRFY someone") == str(replies.VRFY_CANNOT)
    assert t.say("VRFY") == str(replies.PARAMETER_SYNTAX)


def test_help_and_expn(talk: Talker) -> None:
    t = talk()
    assert t.say("HELP").startswith("214-2.0.0")
    assert t.say("EXPN list") == str(replies.NOT_IMPLEMENTED)


def test_quit_is_221_and_closes(talk: Talker) -> None:
    t = talk()
    assert t.say("QUIT") == "221 2.0.0 mx.test closing connection"
    assert t.conn.closed
    assert t.conn.state is ServerState.CLOSED


@pytest.mark.parametrize("line", ["QUIT now", "RSET x", "DATA x"])
def test_argumentless_commands_refuse_arguments_with_501(talk: Talker, line: str) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.say(line) == str(replies.NO_ARGUMENTS_ALLOWED)


def test_unknown_verb_is_500_5_5_2(talk: Talker) -> None:
    assert talk().say("TURN") == str(replies.SYNTAX_ERROR)


def test_rcpt_postmaster_without_domain(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    t.say("MAIL FROM:<>")
    t.say("RCPT TO:<postmaster>")
    assert t.events[-1] == Rcpt(Address("Postmaster", ""))


def test_source_route_is_recorded_on_rcpt(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    t.say("MAIL FROM:<@hop.test:a@b.test>")
    t.say("RCPT TO:<@one.test,@two.test:c@d.test>")
    assert t.events[-1] == Rcpt(Address("c", "d.test"), source_route=("one.test", "two.test"))


# --- SMTPUTF8, SIZE, BODY ---------------------------------------------------------------------------


def test_utf8_sender_without_smtputf8_is_553_5_6_7(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    assert t.say("MAIL FROM:<jöran@example.test>") == str(replies.SMTPUTF8_REQUIRED)
    assert t.say("MAIL FROM:<jöran@example.test> SMTPUTF8").startswith("250")


def test_utf8_recipient_needs_smtputf8_on_mail(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.say("RCPT TO:<用户@例子.广告>") == str(replies.SMTPUTF8_REQUIRED)
    t.say("RSET")
    t.say("MAIL FROM:<a@b.test> SMTPUTF8")
    assert t.say("RCPT TO:<用户@例子.广告>").startswith("250")


def test_parameters_after_helo_are_555(talk: Talker) -> None:
    t = talk()
    t.say("HELO client.test")
    assert t.say("MAIL FROM:<a@b.test> SMTPUTF8") == str(replies.UNKNOWN_PARAMETER)
    assert t.say("MAIL FROM:<a@b.test>").startswith("250")


def test_invalid_utf8_in_command_is_500(talk: Talker) -> None:
    t = talk()
    t.feed(b"NOOP \xff\xfe\r\n")
    assert t.replies[-1].decode().startswith(code(replies.NON_ASCII_COMMAND))


def test_declared_size_over_the_limit_is_552_5_3_4(talk: Talker) -> None:
    t = talk(max_message_size=1000)
    t.say("EHLO client.test")
    assert t.say("MAIL FROM:<a@b.test> SIZE=1001") == str(replies.MESSAGE_TOO_BIG)
    assert t.say("MAIL FROM:<a@b.test> SIZE=1000").startswith("250")
    assert t.events[-1] == Mail(Address("a", "b.test"), {"SIZE": "1000"}, size=1000)


def test_binarymime_needs_bdat(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope(mail="MAIL FROM:<a@b.test> BODY=BINARYMIME")
    assert t.say("DATA") == str(replies.BINARYMIME_NEEDS_BDAT)


def test_binarymime_without_chunking_is_refused(talk: Talker) -> None:
    t = talk(chunking=False)
    t.say("EHLO client.test")
    assert t.say("MAIL FROM:<a@b.test> BODY=BINARYMIME") == str(replies.BAD_BODY_PARAMETER)


# --- line framing ---------------------------------------------------------------------------------


def test_nul_in_command_is_500(talk: Talker) -> None:
    t = talk()
    t.feed(b"NOOP \x00\r\n")
    assert t.replies[-1].decode().rstrip() == str(replies.NUL_IN_COMMAND)


def test_bare_lf_in_command_is_500_and_the_line_is_consumed(talk: Talker) -> None:
    t = talk()
    events = t.feed(b"NOOP\nNOOP\r\n")
    assert events == [CommandError(replies.BARE_LF_IN_COMMAND, reason="malformed command line"), Noop()]


def test_bare_cr_in_command_is_500(talk: Talker) -> None:
    t = talk()
    t.feed(b"NOOP\rRSET\r\n")
    assert t.replies[-1].decode().rstrip() == str(replies.BARE_LF_IN_COMMAND)


def test_command_line_over_the_limit_is_500_5_5_6_and_skipped(talk: Talker) -> None:
    t = talk(max_command_line=512)
    assert t.say("NOOP " + "x" * 505).startswith("250")  # 512 with CRLF
    assert t.say("NOOP " + "x" * 506) == str(replies.LINE_TOO_LONG)


def test_endless_command_line_is_dropped_as_it_comes_and_answered_once(talk: Talker) -> None:
    t = talk()
    for _ in range(200):  # 200 x 10 KiB, no LF
        assert t.feed(b"x" * 10_240) == []
    events = t.feed(b"still the same line\r\nNOOP\r\n")
    assert [type(event) for event in events] == [CommandError, Noop]
    assert t.replies[-2].decode().rstrip() == str(replies.LINE_TOO_LONG)


def test_mail_and_rcpt_lines_may_be_longer_for_parameters(talk: Talker) -> None:
    t = talk(max_command_line=512, max_param_line=2048)
    t.say("EHLO client.test")
    assert t.say("MAIL FROM:<a@b.test> AUTH=" + "x" * 1000).startswith("250")
    assert t.say("RCPT TO:<a@b.test> " + "X" * 2100) == str(replies.LINE_TOO_LONG)


@pytest.mark.parametrize(
    "line", ["GET / HTTP/1.1", "POST /x HTTP/1.0", "CONNECT a:443 HTTP/1.1", "Host: mx.test"]
)
def test_http_request_is_answered_and_the_connection_closes(talk: Talker, line: str) -> None:
    t = talk()
    assert t.say(line) == str(replies.HTTP_COMMAND)
    assert t.conn.closed


# --- pipelining -----------------------------------------------------------------------------------


def test_pipelined_commands_are_parsed_one_at_a_time_and_answered_in_order(talk: Talker) -> None:
    t = talk()
    events = t.feed(
        b"EHLO client.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nRCPT TO:<e@f.test>\r\nDATA\r\n"
        b"Subject: hi\r\n\r\nbody\r\n.\r\nQUIT\r\n"
    )
    assert [type(event).__name__ for event in events] == [
        "Ehlo", "Mail", "Rcpt", "Rcpt", "Data", "DataChunk", "EndOfData", "Quit",
    ]  # fmt: skip
    assert [reply.split(b" ")[0][:3] for reply in t.replies] == [
        b"250",
        b"250",
        b"250",
        b"250",
        b"354",
        b"250",
        b"221",
    ]
    assert t.body() == b"Subject: hi\r\n\r\nbody\r\n"


def test_next_event_before_answering_is_a_local_protocol_error() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.send(replies.greeting("mx.test"))
    conn.receive_data(b"NOOP\r\nNOOP\r\n")
    conn.next_event()
    with pytest.raises(LocalProtocolError):
        conn.next_event()


# --- misuse of send() -------------------------------------------------------------------------------


def test_send_with_nothing_to_answer_raises_except_for_421() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.send(replies.greeting("mx.test"))
    with pytest.raises(LocalProtocolError):
        conn.send(replies.OK)
    assert conn.send(replies.SHUTTING_DOWN).startswith(b"421 4.3.2")
    assert conn.closed
    with pytest.raises(LocalProtocolError):
        conn.send(replies.SHUTTING_DOWN)


def test_any_421_reply_closes(talk: Talker) -> None:
    t = talk()
    t.conn.receive_data(b"EHLO client.test\r\n")
    t.conn.next_event()
    t.conn.send(replies.TOO_MANY_CONNECTIONS_FROM_IP)
    assert t.conn.closed


def test_end_of_data_has_no_default_reply_and_data_needs_354(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    t.conn.receive_data(b"DATA\r\n")
    data = t.conn.next_event()
    with pytest.raises(LocalProtocolError):
        t.conn.send(replies.OK)
    t.conn.send(replies.START_DATA)
    t.conn.receive_data(b".\r\n")
    end = t.conn.next_event()
    assert end == EndOfData(0)
    with pytest.raises(LocalProtocolError):
        t.conn.default_reply(end)
    assert isinstance(data, Data)


def test_positive_reply_to_command_error_raises(talk: Talker) -> None:
    t = talk()
    t.conn.receive_data(b"BOGUS\r\n")
    t.conn.next_event()
    with pytest.raises(LocalProtocolError):
        t.conn.send(replies.OK)


def test_refused_data_keeps_the_recipients(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    t.conn.receive_data(b"DATA\r\n")
    t.conn.next_event()
    t.conn.send(replies.TRANSACTION_FAILED)
    assert (t.conn.state, t.conn.recipient_count) == (ServerState.RCPT, 1)


def test_eof_closes_and_later_bytes_are_ignored(talk: Talker) -> None:
    t = talk()
    t.conn.receive_data(b"")
    assert t.conn.closed
    t.conn.receive_data(b"NOOP\r\n")
    assert t.conn.next_event() is NEED_DATA


# --- limits ---------------------------------------------------------------------------------------


def test_recipients_over_the_limit_are_452_4_5_3_and_not_counted_as_errors(talk: Talker) -> None:
    t = talk(max_recipients=2, max_errors=1)
    t.ehlo_and_envelope()
    assert t.say("RCPT TO:<x@y.test>").startswith("250")
    for _ in range(3):
        assert t.say("RCPT TO:<z@y.test>") == str(replies.TOO_MANY_RECIPIENTS)
    assert not t.conn.closed
    assert t.conn.recipient_count == 2


def test_greylisting_and_rate_replies_451_4_7_1_are_not_counted_as_errors(talk: Talker) -> None:
    t = talk(max_errors=1)
    t.ehlo_and_envelope()
    greylisted = Reply(451, Status(4, 7, 1), "Greylisted: please try again later")
    for _ in range(3):
        t.conn.receive_data(b"RCPT TO:<new@rcpt.test>\r\n")
        event = t.conn.next_event()
        assert isinstance(event, Rcpt)
        assert t.conn.send(greylisted) == greylisted.to_bytes()
    assert not t.conn.closed
    assert t.say("BOGUS") == str(replies.SYNTAX_ERROR)  # the first real error is still counted
    assert t.say("BOGUS") == str(replies.TOO_MANY_ERRORS)


def test_error_limit_turns_the_next_error_into_421_and_closes(talk: Talker) -> None:
    t = talk(max_errors=3)
    for _ in range(3):
        assert t.say("BOGUS") == str(replies.SYNTAX_ERROR)
    assert t.say("NOOP").startswith("250")
    assert t.say("BOGUS") == str(replies.TOO_MANY_ERRORS)
    assert t.conn.closed


def test_refused_messages_do_not_count_as_errors(talk: Talker) -> None:
    t = talk(max_errors=0)
    t.ehlo_and_envelope()
    t.feed(b"DATA\r\nbare\nline\r\n.\r\n")
    assert t.events[-1] == EndOfData(11, replies.BARE_LINE_ENDING)
    assert t.replies[-1].decode().rstrip() == str(replies.BARE_LINE_ENDING)
    assert not t.conn.closed


# --- DATA through the connection -------------------------------------------------------------------


def test_smuggled_second_message_after_bare_lf_dot_is_part_of_the_first(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    events = t.feed(
        b"DATA\r\nSubject: one\r\n\r\nhello\n.\n"
        b"MAIL FROM:<admin@victim.test>\r\nRCPT TO:<x@y.test>\r\nDATA\r\n"
        b"Subject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    assert [type(event) for event in events if isinstance(event, Mail | Rcpt | Data)] == [Data]
    assert events[-1] == EndOfData(len(t.body()), replies.BARE_LINE_ENDING)
    assert b"admin@victim.test" in t.body()
    assert t.conn.state is ServerState.READY


def test_normalize_mode_accepts_and_fixes_bare_line_endings(talk: Talker) -> None:
    t = talk(bare_line_endings="normalize")
    t.ehlo_and_envelope()
    t.feed(b"DATA\r\na\nb\rc\r\n.\r\n")
    assert t.body() == b"a\r\nb\r\nc\r\n"
    assert t.events[-1] == EndOfData(9, None)


def test_long_text_line_policy(talk: Talker) -> None:
    strict = talk()
    strict.ehlo_and_envelope()
    strict.feed(b"DATA\r\n" + b"x" * 1500 + b"\r\n.\r\n")
    assert strict.events[-1] == EndOfData(1502, replies.TEXT_LINE_TOO_LONG)
    lenient = talk(long_lines="accept")
    lenient.ehlo_and_envelope()
    lenient.feed(b"DATA\r\n" + b"x" * 1500 + b"\r\n.\r\n")
    assert lenient.events[-1] == EndOfData(1502, None)


def test_message_over_the_size_limit_reports_552_at_the_end(talk: Talker) -> None:
    t = talk(max_message_size=100)
    t.ehlo_and_envelope()
    t.feed(b"DATA\r\n" + b"line\r\n" * 50)
    assert len(t.body()) <= 100
    t.feed(b".\r\nNOOP\r\n")
    assert EndOfData(300, replies.MESSAGE_TOO_BIG) in t.events
    assert t.replies[-1].startswith(b"250")  # NOOP after the refused message


def test_data_body_arrives_as_it_is_received(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    t.feed(b"DATA\r\n")
    assert t.feed(b"part one\r\npart") == [DataChunk(b"part one\r\npart")]
    assert t.feed(b" two\r\n.") == [DataChunk(b" two\r\n")]
    assert t.feed(b"\r\n") == [EndOfData(20)]


# --- STARTTLS -------------------------------------------------------------------------------------


def test_starttls_not_offered_is_502(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    assert t.say("STARTTLS") == str(replies.NOT_IMPLEMENTED)


def test_starttls_discards_bytes_pipelined_before_the_handshake(talk: Talker) -> None:
    t = talk(starttls=True)
    t.say("EHLO client.test")
    t.conn.receive_data(b"STARTTLS\r\nMAIL FROM:<injected@evil.test>\r\n")
    assert t.conn.next_event() == StartTls()
    assert t.conn.send(replies.START_TLS_READY) == b"220 2.0.0 Ready to start TLS\r\n"
    assert t.conn.state is ServerState.TLS_PENDING
    with pytest.raises(LocalProtocolError):
        t.conn.next_event()
    t.conn.tls_started()
    assert (t.conn.state, t.conn.tls_active) == (ServerState.GREETED, True)
    assert t.conn.next_event() is NEED_DATA  # the injected MAIL is gone
    assert t.say("MAIL FROM:<a@b.test>") == str(replies.NEED_HELO)  # RFC 3207 4.2: EHLO again
    assert "STARTTLS" not in t.say("EHLO client.test")
    assert t.say("STARTTLS") == str(replies.BAD_SEQUENCE)


def test_starttls_needs_ehlo_no_transaction_and_no_arguments(talk: Talker) -> None:
    t = talk(starttls=True)
    assert t.say("STARTTLS") == str(replies.NEED_HELO)
    t.ehlo_and_envelope()
    assert t.say("STARTTLS") == str(replies.BAD_SEQUENCE)
    t.say("RSET")
    assert t.say("STARTTLS now") == str(replies.NO_ARGUMENTS_ALLOWED)


def test_refused_starttls_stays_in_plaintext(talk: Talker) -> None:
    t = talk(starttls=True)
    t.say("EHLO client.test")
    t.conn.receive_data(b"STARTTLS\r\nNOOP\r\n")
    t.conn.next_event()
    t.conn.send(Reply(454, Status(4, 7, 0), "TLS not available"))
    assert t.conn.next_event() == Noop()


def test_plaintext_fed_during_the_handshake_is_a_local_protocol_error(talk: Talker) -> None:
    t = talk(starttls=True)
    t.say("EHLO client.test")
    t.say("STARTTLS")
    with pytest.raises(LocalProtocolError):
        t.conn.receive_data(b"NOOP\r\n")
    with pytest.raises(LocalProtocolError):
        ServerConnection(settings=ServerSettings(hostname="h")).tls_started()


# --- AUTH -----------------------------------------------------------------------------------------


def test_auth_is_offered_only_after_tls(talk: Talker) -> None:
    t = talk(starttls=True, auth_mechanisms=("PLAIN",))
    assert "AUTH" not in t.say("EHLO client.test")
    assert t.say("AUTH PLAIN") == str(replies.ENCRYPTION_REQUIRED)
    t.say("STARTTLS")
    t.conn.tls_started()
    assert "250 AUTH PLAIN" in t.say("EHLO client.test")
    t.conn.receive_data(b"AUTH plain AGEAYg==\r\n")
    assert t.conn.next_event() == Auth("PLAIN", "AGEAYg==")


def test_auth_before_starttls_is_forgotten_after_it(talk: Talker) -> None:
    t = talk(starttls=True, auth_mechanisms=("PLAIN",), auth_without_tls=True)
    t.say("EHLO client.test")
    t.conn.receive_data(b"AUTH PLAIN =\r\n")
    t.conn.next_event()
    t.conn.send(Reply(235, Status(2, 7, 0), "Authentication successful"))
    t.say("STARTTLS")
    t.conn.tls_started()
    t.say("EHLO client.test")
    t.conn.receive_data(b"AUTH PLAIN =\r\n")
    assert t.conn.next_event() == Auth("PLAIN", "")


def test_auth_not_configured_is_502(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    assert t.say("AUTH PLAIN") == str(replies.NOT_IMPLEMENTED)


def test_auth_refusals(talk: Talker) -> None:
    t = talk(auth_mechanisms=("PLAIN",), auth_without_tls=True)
    assert t.say("AUTH PLAIN") == str(replies.NEED_HELO)
    t.say("EHLO client.test")
    assert t.say("AUTH CRAM-MD5") == str(replies.AUTH_MECHANISM_UNKNOWN)
    t.say("MAIL FROM:<a@b.test>")
    assert t.say("AUTH PLAIN") == str(replies.BAD_SEQUENCE)
    t.say("RSET")
    t.conn.receive_data(b"AUTH PLAIN =\r\n")
    assert t.conn.next_event() == Auth("PLAIN", "")
    t.conn.send(Reply(235, Status(2, 7, 0), "Authentication successful"))
    assert t.say("AUTH PLAIN") == str(replies.ALREADY_AUTHENTICATED)


def test_sasl_continuation_lines_are_responses_not_commands(talk: Talker) -> None:
    t = talk(auth_mechanisms=("LOGIN",), auth_without_tls=True)
    t.say("EHLO client.test")
    t.conn.receive_data(b"AUTH LOGIN\r\nUVVJVA==\r\nRSET\r\n")
    assert t.conn.next_event() == Auth("LOGIN", None)
    assert t.conn.send(Reply(334, None, "VXNlcm5hbWU6")) == b"334 VXNlcm5hbWU6\r\n"
    assert t.conn.next_event() == AuthResponse("UVVJVA==")  # "QUIT" in base64: never a command
    t.conn.send(Reply(334, None, "UGFzc3dvcmQ6"))
    assert t.conn.next_event() == AuthResponse("RSET")  # a response line, whatever it says
    t.conn.send(Reply(235, Status(2, 7, 0), "Authentication successful"))
    assert t.say("AUTH LOGIN") == str(replies.ALREADY_AUTHENTICATED)


def test_sasl_cancel_and_garbage_are_501(talk: Talker) -> None:
    t = talk(auth_mechanisms=("PLAIN",), auth_without_tls=True)
    t.say("EHLO client.test")
    t.conn.receive_data(b"AUTH PLAIN\r\n*\r\n")
    t.conn.next_event()
    t.conn.send(Reply(334, None, ""))
    event = t.conn.next_event()
    assert event == CommandError(replies.AUTH_CANCELLED, reason="client cancelled AUTH")
    t.conn.send(t.conn.default_reply(event))
    t.conn.receive_data(b"AUTH PLAIN\r\nnot base64\r\n")
    t.conn.next_event()
    t.conn.send(Reply(334, None, ""))
    assert t.conn.next_event() == CommandError(
        replies.AUTH_RESPONSE_SYNTAX, reason="SASL response is not base64"
    )
    t.conn.send(replies.AUTH_RESPONSE_SYNTAX)
    assert t.say("NOOP").startswith("250")


def test_334_answers_only_auth(talk: Talker) -> None:
    t = talk()
    t.conn.receive_data(b"NOOP\r\n")
    t.conn.next_event()
    with pytest.raises(LocalProtocolError):
        t.conn.send(Reply(334, None, ""))


# --- BDAT -----------------------------------------------------------------------------------------


def test_bdat_chunks_arrive_raw_and_each_is_answered(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    events = t.feed(b"BDAT 7\r\n.\r\nQUITBDAT 0 LAST\r\nNOOP\r\n")
    assert events == [
        Bdat(7, False),
        DataChunk(b".\r\nQUIT"),
        EndOfChunk(7, False),
        Bdat(0, True),
        EndOfChunk(7, True),
        Noop(),
    ]
    assert t.replies[3:5] == [replies.CHUNK_OK.to_bytes(), replies.queued("Q1").to_bytes()]
    assert t.conn.state is ServerState.READY


def test_bdat_chunk_is_streamed_across_receives(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.feed(b"BDAT 10 LAST\r\nabc") == [Bdat(10, True), DataChunk(b"abc")]
    assert t.conn.state is ServerState.BDAT
    assert t.feed(b"defghijRSET\r\n") == [DataChunk(b"defghij"), EndOfChunk(10, True), t.events[-1]]


def test_bdat_without_recipients_reads_the_octets_then_refuses(talk: Talker) -> None:
    t = talk()
    t.say("EHLO client.test")
    t.say("MAIL FROM:<a@b.test>")
    events = t.feed(b"BDAT 12\r\nRSET\r\nQUIT\r\nNOOP\r\n")
    assert events == [
        CommandError(replies.NEED_RCPT, reason="BDAT out of sequence; its octets were discarded"),
        Noop(),
    ]
    assert t.conn.state is ServerState.MAIL


def test_bdat_before_ehlo_reads_the_octets_then_refuses(talk: Talker) -> None:
    t = talk()
    t.feed(b"BDAT 6\r\nQUIT\r\n")
    assert [event.reply for event in t.events if isinstance(event, CommandError)] == [replies.NEED_HELO]
    assert not t.conn.closed


def test_bdat_zero_last_ends_an_empty_message(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.feed(b"BDAT 0 LAST\r\n") == [Bdat(0, True), EndOfChunk(0, True)]


def test_data_after_bdat_is_503(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    t.feed(b"BDAT 1\r\nx")
    assert t.conn.state is ServerState.BDAT_READY
    assert t.say("DATA") == str(replies.DATA_AFTER_BDAT)
    assert t.say("RCPT TO:<late@b.test>") == str(replies.BAD_SEQUENCE)


def test_bdat_over_the_size_limit_is_dropped_and_flagged(talk: Talker) -> None:
    t = talk(max_message_size=5)
    t.ehlo_and_envelope()
    events = t.feed(b"BDAT 3\r\nabcBDAT 4 LAST\r\ndefg")
    assert [event for event in events if isinstance(event, DataChunk)] == [DataChunk(b"abc")]
    assert events[-1] == EndOfChunk(7, True, replies.MESSAGE_TOO_BIG)


def test_refused_chunk_ends_the_transaction() -> None:
    conn = ServerConnection(settings=ServerSettings(hostname="mx.test"))
    conn.send(replies.greeting("mx.test"))
    conn.receive_data(b"EHLO c.test\r\nMAIL FROM:<a@b.test>\r\nRCPT TO:<c@d.test>\r\nBDAT 1\r\nx")
    for _ in range(3):
        conn.send(conn.default_reply(conn.next_event()))
    assert isinstance(conn.next_event(), Bdat)
    assert isinstance(conn.next_event(), DataChunk)
    assert isinstance(conn.next_event(), EndOfChunk)
    conn.send(replies.INSUFFICIENT_STORAGE)
    assert conn.state is ServerState.READY


def test_bdat_with_unreadable_size_closes_after_the_reply(talk: Talker) -> None:
    t = talk()
    t.ehlo_and_envelope()
    assert t.say("BDAT lots") == str(replies.BDAT_SYNTAX)
    assert t.conn.closed


def test_bdat_when_chunking_is_off_is_502_after_reading_the_octets(talk: Talker) -> None:
    t = talk(chunking=False)
    t.ehlo_and_envelope()
    assert "CHUNKING" not in t.conn.ehlo_keywords()
    events = t.feed(b"BDAT 6 LAST\r\nQUIT\r\n")
    assert [event.reply for event in events if isinstance(event, CommandError)] == [replies.NOT_IMPLEMENTED]
    assert not t.conn.closed


# --- fuzzing --------------------------------------------------------------------------------------

_FRAGMENTS = [
    b"EHLO c.test\r\n", b"HELO c.test\r\n", b"MAIL FROM:<a@b.test>\r\n", b"MAIL FROM:<> BODY=BINARYMIME\r\n",
    b"RCPT TO:<c@d.test>\r\n", b"DATA\r\n", b"BDAT 3\r\n", b"BDAT 0 LAST\r\n", b"BDAT 2 LAST\r\n", b".\r\n",
    b"RSET\r\n", b"STARTTLS\r\n", b"AUTH PLAIN =\r\n", b"QUIT\r\n", b"NOOP\r\n", b"GET / HTTP/1.1\r\n",
    b"\r\n", b"\r", b"\n", b".", b"\x00", b"\xff", b"x" * 300, b"RCPT TO:<\xc3\xa9@d.test>\r\n",
]  # fmt: skip
_inputs = st.lists(
    st.lists(st.sampled_from(_FRAGMENTS) | st.binary(max_size=20), max_size=8).map(b"".join), max_size=12
)


def _answer(conn: ServerConnection, event: Event) -> None:
    if isinstance(event, EndOfData) or (isinstance(event, EndOfChunk) and event.last):
        conn.send(event.problem or replies.queued("Q"))
    elif isinstance(event, Auth):
        conn.send(Reply(535, Status(5, 7, 8), "Authentication failed"))
    else:
        conn.send(conn.default_reply(event))
    if conn.state is ServerState.TLS_PENDING:
        conn.tls_started()


@settings(max_examples=200)
@given(pieces=_inputs, normalize=st.booleans())
def test_no_input_makes_the_server_raise(pieces: list[bytes], normalize: bool) -> None:
    conn = ServerConnection(
        settings=ServerSettings(
            hostname="mx.test",
            max_message_size=50,
            max_command_line=64,
            max_param_line=128,
            max_recipients=3,
            max_errors=50,
            starttls=True,
            auth_mechanisms=("PLAIN",),
            auth_without_tls=True,
            bare_line_endings="normalize" if normalize else "reject",
        )
    )
    conn.send(replies.greeting("mx.test"))
    for piece in [*pieces, b""]:
        conn.receive_data(piece)
        for _ in range(10_000):
            event = conn.next_event()
            if event is NEED_DATA:
                break
            assert isinstance(event, Event)
            if isinstance(event, DataChunk):
                assert event.data
            elif not isinstance(event, Bdat):
                _answer(conn, event)
        else:
            pytest.fail("the server produced events without end")
    assert conn.closed
