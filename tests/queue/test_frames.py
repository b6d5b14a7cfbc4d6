"""Frames between the server and its commit process: what goes in comes out, however the stream is cut."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.queue.frames import HEADER, decode, encode, split
from postroom.queue.index import NewMessage
from postroom.queue.model import Envelope, Recipient

# The values the two ends exchange are tuples of ints, strings, None, bytes and lists of them.
_LEAVES = st.none() | st.booleans() | st.integers() | st.text(max_size=40) | st.binary(max_size=200)
_VALUES = st.recursive(
    _LEAVES,
    lambda inner: st.lists(inner, max_size=5) | st.tuples(inner, inner) | st.tuples(inner, inner, inner),
    max_leaves=20,
)


def _feed(stream: bytes, cuts: list[int]) -> tuple[list[Any], bytearray]:
    """Feeds ``stream`` in the pieces ``cuts`` makes (as a socket may deliver it); decodes every frame."""
    buffer = bytearray()
    decoded: list[Any] = []
    start = 0
    for end in [*sorted(cuts), len(stream)]:
        buffer += stream[start:end]
        start = end
        decoded.extend(decode(frame) for frame in split(buffer))
    return decoded, buffer


@settings(max_examples=200, deadline=None)
@given(values=st.lists(_VALUES, max_size=8), data=st.data())
def test_any_chunking_of_the_stream_gives_back_every_value_in_order(
    values: list[Any], data: st.DataObject
) -> None:
    stream = b"".join(encode(value) for value in values)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=30), label="cuts")
    decoded, left = _feed(stream, cuts)
    assert decoded == values
    assert left == bytearray()


@settings(max_examples=100, deadline=None)
@given(value=_VALUES, data=st.data())
def test_a_partial_frame_stays_in_the_buffer(value: Any, data: st.DataObject) -> None:
    frame = encode(value)
    size = data.draw(st.integers(0, len(frame) - 1), label="size")
    buffer = bytearray(encode("whole") + frame[:size])
    assert [decode(f) for f in split(buffer)] == ["whole"]
    assert buffer == frame[:size]  # nothing of the partial frame taken
    buffer += frame[size:]
    assert [decode(f) for f in split(buffer)] == [value]
    assert buffer == bytearray()


def test_a_frame_is_a_big_endian_length_then_the_payload() -> None:
    frame = encode((7, [None, "spool file: gone"]))
    (length,) = HEADER.unpack_from(frame)
    assert HEADER.size == 4
    assert length == len(frame) - 4
    assert frame[:4] == length.to_bytes(4, "big")


def test_split_of_a_header_alone_or_of_nothing_takes_nothing() -> None:
    empty = bytearray()
    assert split(empty) == []
    header_only = bytearray(HEADER.pack(10))
    assert split(header_only) == []
    assert header_only == HEADER.pack(10)
    short_header = bytearray(b"\x00\x00")
    assert split(short_header) == []
    assert short_header == b"\x00\x00"


def test_an_empty_payload_is_a_frame() -> None:
    buffer = bytearray(HEADER.pack(0) + encode(1))
    assert split(buffer) == [b"", encode(1)[4:]]
    assert buffer == bytearray()


def test_a_batch_of_new_messages_survives_the_round_trip() -> None:
    envelope = Envelope(
        sender="s@example.test",
        recipients=(Recipient(address="R@example.test", mailbox="r@example.test"),),
        client_ip="192.0.2.1",
        helo="c.example.test",
    )
    items = [
        ("/spool/incoming/0001", NewMessage("0" * 16, envelope, 10, 1.5)),
        (None, NewMessage("1" * 16, envelope, 3, 2.5, body=b"hi\r\n", report_id=4)),
    ]
    buffer = bytearray(encode((3, items)))
    (frame,) = split(buffer)
    assert decode(frame) == (3, items)
