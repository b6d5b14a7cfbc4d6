"""Submission fixes: Date and Message-ID added when missing, whatever the chunking."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.server.headers import HeaderCompleter


def run(chunks: list[bytes]) -> bytes:
    out: list[bytes] = []
    completer = HeaderCompleter(write=out.append, hostname="mx.test", unique="Q1", now=0.0)
    for chunk in chunks:
        completer.feed(chunk)
    completer.finish()
    return b"".join(out)


def test_missing_date_and_message_id_are_added_at_the_end_of_the_headers() -> None:
    result = run([b"From: a@x.test\r\nSubject: hi\r\n\r\nbody\r\n"])
    head, _, body = result.partition(b"\r\n\r\n")
    assert head.startswith(b"From: a@x.test\r\nSubject: hi\r\nDate: ")
    assert head.endswith(b"\r\nMessage-ID: <Q1@mx.test>")
    assert body == b"body\r\n"


def test_present_headers_are_kept_and_nothing_added() -> None:
    message = b"Date: Thu, 1 Jan 1970 00:00:00 +0000\r\nMESSAGE-ID: <a@b>\r\n\r\nx\r\n"
    assert run([message]) == message


def test_a_message_without_body_or_headers() -> None:
    assert b"Message-ID: <Q1@mx.test>\r\n" in run([b"Subject: only\r\n"])
    assert run([b"\r\nbody\r\n"]).endswith(b"Message-ID: <Q1@mx.test>\r\n\r\nbody\r\n")


@settings(max_examples=100)
@given(st.lists(st.integers(min_value=1, max_value=40), max_size=20))
def test_any_chunking_gives_the_same_result(cuts: list[int]) -> None:
    message = b"From: a@x.test\r\nSubject: chunked\r\n\r\nline 1\r\nline 2\r\n"
    chunks, rest = [], message
    for cut in cuts:
        chunks.append(rest[:cut])
        rest = rest[cut:]
    chunks.append(rest)
    assert run([c for c in chunks if c]) == run([message])
