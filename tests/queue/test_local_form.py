"""Spool files in a mailbox's form (local_form.py): written by SpoolWriter, given back in wire form."""

from __future__ import annotations

import itertools
import tempfile
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from postroom.queue import Envelope, Outcome, Queue, Recipient
from postroom.queue.local_form import local_prefix, prefix_length, trace_headers, wire_form
from postroom.queue.prepared import PreparedFiles
from postroom.queue.spool import SpoolWriter
from postroom.smtp.data import DotReader

QUEUE_ID = "0123456789abcdef"
PREFIX = local_prefix(sender="s@example.test", mailbox="bob@example.test")
MESSAGE = b"Received: x\r\n\r\n" + b"line of body\r\n.dot\r\n\rbare CR\r\n" * 3000


def writer(folder: Path, *, inline_max: int = 10, prefix: bytes = PREFIX) -> SpoolWriter:
    (folder / "incoming").mkdir(parents=True, exist_ok=True)
    return SpoolWriter(
        queue_id=QUEUE_ID, incoming_dir=folder / "incoming", inline_max=inline_max, local_prefix=prefix
    )


def committed(spool: SpoolWriter, folder: Path) -> bytes:
    spool.seal()
    final = folder / "spool" / QUEUE_ID
    final.parent.mkdir(exist_ok=True)
    spool.make_durable(final)
    return final.read_bytes()


def feed(spool: SpoolWriter, data: bytes, step: int) -> None:
    for start in range(0, len(data), step):
        spool.write(data[start : start + step])


def maildir_form(message: bytes) -> bytes:
    """What a copy into a Maildir writes: the trace headers, then every CRLF as LF."""
    return PREFIX + message.replace(b"\r\n", b"\n")


def test_the_prefix_is_the_trace_headers_with_lf_and_is_recognised() -> None:
    trace = trace_headers(sender="s@example.test", mailbox="bob@example.test")
    assert trace.replace(b"\r\n", b"\n") == PREFIX
    assert prefix_length(PREFIX + b"Received: x\n") == len(PREFIX)
    assert prefix_length(b"Received: x\r\n") == 0
    assert prefix_length(trace_headers(sender="s@x", mailbox="b@x") + b"Received: x\r\n") == 0
    assert prefix_length(b"Return-Path: <a>\nSubject: no Delivered-To\n") == 0


def test_a_spilled_message_for_one_mailbox_is_written_in_its_form(tmp_path: Path) -> None:
    spool = writer(tmp_path)
    feed(spool, MESSAGE, 4093)  # odd pieces: a CR and its LF fall into different writes
    assert spool.local_form
    assert spool.size == len(MESSAGE)  # the message as received
    assert spool.head(50) == MESSAGE[:50]  # read back in wire form
    stored = committed(spool, tmp_path)
    assert stored == maildir_form(MESSAGE)
    assert wire_form(stored) == MESSAGE
    assert (tmp_path / "spool" / QUEUE_ID).stat().st_mode & 0o777 == 0o600


def test_without_a_prefix_the_file_is_the_message_as_received(tmp_path: Path) -> None:
    spool = writer(tmp_path, prefix=b"")
    feed(spool, MESSAGE, 4096)
    assert not spool.local_form
    assert committed(spool, tmp_path) == MESSAGE


def test_an_inline_message_keeps_the_wire_form(tmp_path: Path) -> None:
    spool = writer(tmp_path, inline_max=1000)
    spool.write(b"Subject: small\r\n\r\nbody\r\n")
    assert not spool.local_form
    assert spool.inline_body == b"Subject: small\r\n\r\nbody\r\n"


def test_a_bare_lf_turns_the_file_back_into_wire_form(tmp_path: Path) -> None:
    spool = writer(tmp_path)
    first, second = MESSAGE, b"binary\nline\r\n" * 10
    feed(spool, first, 4096)
    assert spool.local_form
    spool.write(second)  # BDAT may carry a bare LF: the Maildir form could not give it back
    assert not spool.local_form
    spool.write(b"more\r\n")
    assert committed(spool, tmp_path) == first + second + b"more\r\n"
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == []


def test_prepend_goes_below_the_trace_headers(tmp_path: Path) -> None:
    spool = writer(tmp_path)
    feed(spool, MESSAGE, 4096)
    spool.prepend(b"Authentication-Results: mx; spf=pass\r\n")
    assert spool.local_form
    assert spool.head(24) == b"Authentication-Results: "
    expected = b"Authentication-Results: mx; spf=pass\r\n" + MESSAGE
    assert spool.size == len(expected)
    assert committed(spool, tmp_path) == maildir_form(expected)
    assert [p.name for p in (tmp_path / "incoming").iterdir()] == []


def test_a_message_ending_in_a_bare_cr_keeps_it(tmp_path: Path) -> None:
    spool = writer(tmp_path)
    feed(spool, MESSAGE + b"end\r", 4096)
    stored = committed(spool, tmp_path)
    assert stored == maildir_form(MESSAGE) + b"end\r"
    assert wire_form(stored) == MESSAGE + b"end\r"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b".", b"xyz" * 30]), max_size=200),
    step=st.integers(min_value=1, max_value=97),
)
def test_any_message_in_any_pieces_comes_back_byte_identical(
    tmp_path: Path, body: list[bytes], step: int
) -> None:
    message = b"Received: x\r\n" + b"".join(body) * 3
    folder = Path(tempfile.mkdtemp(dir=tmp_path))
    spool = writer(folder)
    feed(spool, message, step)
    stored = committed(spool, folder)
    if spool_was_local := prefix_length(stored) > 0:
        assert stored == maildir_form(message)  # what a copy into the Maildir would have written
    assert wire_form(stored) == message
    assert spool_was_local or b"\n" in message.replace(b"\r\n", b"")


def test_prepared_files_grow_with_demand_and_are_removed_at_stop(tmp_path: Path) -> None:
    prepared = PreparedFiles(tmp_path, stock=2)
    prepared.start()
    try:
        assert prepared.take() is None  # none asked for yet: a queue that never spills keeps none
        taken = None
        for _ in range(500):  # bounded: the thread makes one file within moments
            taken = prepared.take()
            if taken is not None:
                break
            time.sleep(0.01)
        assert taken is not None
        path, file = taken
        file.write(b"x")
        file.close()
        assert path.parent == tmp_path
        assert path.stat().st_mode & 0o777 == 0o600
    finally:
        prepared.stop()
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # only the one taken is left


async def test_a_bounce_of_a_message_in_a_mailbox_s_form_quotes_it_as_received(queue: Queue) -> None:
    message = b"Subject: big\r\nX-Other: 1\r\n\r\n" + b"body line\r\n" * 1000
    recipient = Recipient(address="bob@example.test", mailbox="bob@example.test")
    writer = queue.open_spool(sender="s@example.test", recipients=(recipient,))
    writer.write(message)
    queue_id = await queue.commit(
        writer, Envelope(sender="s@example.test", recipients=(recipient,), ret="FULL")
    )
    assert prefix_length(queue.spool_path(queue_id).read_bytes()) == len(PREFIX)
    (due,) = queue.claim_due(limit=1)
    (failed,) = queue.record([Outcome(queue_id, due.idx, "permanent", "mailbox gone")])
    assert failed.headers == b"Subject: big\r\nX-Other: 1\r\n\r\n"
    assert failed.original == message


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=st.lists(st.sampled_from([b"a", b"\r", b"\n", b"\r\n", b".", b"xyz" * 30]), max_size=200),
    cuts=st.lists(st.integers(min_value=0, max_value=20_000), max_size=8),
    inline_max=st.sampled_from([10, 4000]),  # spilled at once, or pieces gathered in memory first
)
def test_pieces_the_data_reader_calls_crlf_only_make_the_same_file(
    tmp_path: Path, body: list[bytes], cuts: list[int], inline_max: int
) -> None:
    """The DATA reader's hint takes a faster path to the Maildir form; the file must not change."""
    raw = b"".join(body) * 3 + b"filler\r\n" * 700  # over inline_max: the file is always spilled
    stuffed = (b"\r\n" + raw).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"
    points = sorted({min(cut, len(stuffed)) for cut in cuts})
    dot = DotReader(max_size=0, normalize=False, reject_long_lines=False)
    folders = [Path(tempfile.mkdtemp(dir=tmp_path)) for _ in range(2)]
    hinted, plain = writer(folders[0], inline_max=inline_max), writer(folders[1], inline_max=inline_max)
    for spool in (hinted, plain):
        spool.write(b"Received: x\r\n")
    for start, end in itertools.pairwise([0, *points, len(stuffed)]):
        out, _ = dot.feed(stuffed[start:end])
        if out:
            hinted.write(out, crlf_only=dot.crlf_only)
            plain.write(out)
    assert committed(hinted, folders[0]) == committed(plain, folders[1])
