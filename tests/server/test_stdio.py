"""The SMTP session over byte streams (sendmail -bs): pipelined commands in, replies out, messages on."""

from __future__ import annotations

import io

from postroom.server.stdio import StdioMessage, StdioSession
from postroom.smtp import replies
from postroom.smtp.server import ServerSettings
from postroom.smtp.types import Address, Reply


def run(transcript: bytes) -> tuple[list[str], list[StdioMessage]]:
    delivered: list[StdioMessage] = []

    def check(address: Address) -> Reply | None:
        return replies.NO_SUCH_USER if address.local_part == "nobody" else None

    def deliver(message: StdioMessage) -> Reply:
        delivered.append(message)
        return replies.queued("0123456789abcdef")

    session = StdioSession(
        settings=ServerSettings(hostname="h.test", chunking=False), check_recipient=check, deliver=deliver
    )
    out = io.BytesIO()
    session.run(io.BufferedReader(io.BytesIO(transcript)), out)
    return out.getvalue().decode().splitlines(), delivered


def test_a_pipelined_conversation_hands_on_the_unstuffed_message() -> None:
    lines, delivered = run(
        b"EHLO me\r\nMAIL FROM:<>\r\nRCPT TO:<nobody@h.test>\r\nRCPT TO:<a@h.test>\r\nDATA\r\n"
        b"Subject: x\r\n\r\n..leading dot\r\n.\r\nQUIT\r\n"
    )
    finals = [line for line in lines if line[3:4] == " "]
    assert finals[0].startswith("220 h.test ")
    assert finals[1].startswith("250 ")  # the last line of the EHLO reply
    assert finals[2:] == [
        "250 2.1.0 Sender ok",
        "550 5.1.1 No such user here",
        "250 2.1.5 Recipient ok",
        "354 End data with <CR><LF>.<CR><LF>",
        "250 2.0.0 Ok: queued as 0123456789abcdef",
        "221 2.0.0 h.test closing connection",
    ]
    assert "CHUNKING" not in "\n".join(lines)
    [message] = delivered
    assert message.sender is None
    assert message.recipients == (Address("a", "h.test"),)
    assert message.body == b"Subject: x\r\n\r\n.leading dot\r\n"


def test_end_of_input_without_quit_ends_the_session_and_drops_the_transaction() -> None:
    lines, delivered = run(b"HELO me\r\nMAIL FROM:<a@h.test>\r\nRCPT TO:<b@h.test>\r\nDATA\r\npartial\r\n")
    assert lines[-1] == "354 End data with <CR><LF>.<CR><LF>"
    assert delivered == []
