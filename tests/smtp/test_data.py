"""DATA framing: end only at CRLF.CRLF, dot-unstuffing, bare line endings, long lines, size; BDAT."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from postroom.smtp import replies
from postroom.smtp.data import ChunkReader, DotReader, is_crlf_only


def reader(*, max_size: int = 0, normalize: bool = False, reject_long_lines: bool = True) -> DotReader:
    return DotReader(max_size=max_size, normalize=normalize, reject_long_lines=reject_long_lines)


def read_all(dot: DotReader, pieces: list[bytes]) -> tuple[bytes, bytes | None]:
    """Feed the pieces in order; return the message octets and the bytes after the end (None: not ended)."""
    out = []
    for index, piece in enumerate(pieces):
        data, rest = dot.feed(piece)
        out.append(data)
        if rest is not None:
            return b"".join(out), rest + b"".join(pieces[index + 1 :])
    return b"".join(out), None


def stuff(body: bytes) -> bytes:
    """What a client sends for ``body`` (which ends with CRLF): dots doubled after CRLF, then the end."""
    return (b"\r\n" + body).replace(b"\r\n.", b"\r\n..")[2:] + b".\r\n"


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(max(cut, 0), len(data)) for cut in cuts})
    edges = [0, *points, len(data)]
    return [data[start:end] for start, end in itertools.pairwise(edges)]


def normalized(body: bytes) -> bytes:
    return body.replace(b"\r\n", b"\n").replace(b"\r", b"\n").replace(b"\n", b"\r\n")


# --- end of data and dot-unstuffing ---------------------------------------------------------------


def test_body_ends_at_crlf_dot_crlf_and_returns_what_follows() -> None:
    assert read_all(reader(), [b"Subject: x\r\n\r\nhello\r\n.\r\nQUIT\r\n"]) == (
        b"Subject: x\r\n\r\nhello\r\n",
        b"QUIT\r\n",
    )


def test_empty_message_is_just_the_dot_line() -> None:
    dot = reader()
    assert read_all(dot, [b".\r\n"]) == (b"", b"")
    assert dot.size == 0
    assert dot.problem is None


def test_leading_dot_is_removed_from_every_line_including_the_first() -> None:
    assert read_all(reader(), [b"..first\r\n..\r\nmid..dle\r\n...\r\n.\r\n"]) == (
        b".first\r\n.\r\nmid..dle\r\n..\r\n",
        b"",
    )


def test_end_marker_split_over_every_boundary_is_found() -> None:
    wire = b"line one\r\n..two\r\n.\r\nNOOP\r\n"
    for cut in range(len(wire) + 1):
        assert read_all(reader(), [wire[:cut], wire[cut:]]) == (b"line one\r\n.two\r\n", b"NOOP\r\n"), cut


def test_byte_at_a_time_gives_the_same_message() -> None:
    wire = stuff(b".a\r\n\r\n.\r\nb\r\n")
    assert read_all(reader(), [wire[index : index + 1] for index in range(len(wire))]) == (
        b".a\r\n\r\n.\r\nb\r\n",
        b"",
    )


def test_reader_holds_back_at_most_the_start_of_an_end_marker() -> None:
    dot = reader()
    assert dot.feed(b"abc\r\n.")[0] == b"abc\r\n"
    assert dot.feed(b"\r")[0] == b""
    assert dot.feed(b"x\r\n")[0] == b"\rx\r\n"  # stuffed dot removed; the CR was bare
    assert dot.problem == replies.BARE_LINE_ENDING


# --- SMTP smuggling (CVE-2023-51764 and friends) ----------------------------------------------------

SMUGGLING_ENDS = [b"\n.\n", b"\n.\r\n", b"\r.\r", b"\r\n.\n", b"\r\n.\r", b"\r.\r\n", b"\n.\r"]


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDS)
def test_bare_line_ending_never_ends_data_and_is_refused(fake_end: bytes) -> None:
    smuggled = b"a\r\n" + fake_end + b"MAIL FROM:<evil@x>\r\nRCPT TO:<v@y>\r\nDATA\r\n"
    dot = reader()
    out, rest = read_all(dot, [smuggled])
    assert rest is None  # still inside the message
    out2, rest = read_all(dot, [b"real end\r\n.\r\n"])
    assert rest == b""
    assert b"MAIL FROM:<evil@x>" in out + out2
    assert dot.problem == replies.BARE_LINE_ENDING


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDS)
def test_normalize_mode_fixes_bare_endings_and_still_ends_only_at_crlf_dot_crlf(fake_end: bytes) -> None:
    dot = reader(normalize=True)
    out, rest = read_all(dot, [b"a\r\n" + fake_end + b"MAIL FROM:<evil@x>\r\n"])
    assert rest is None
    out2, rest = read_all(dot, [b".\r\n"])
    assert rest == b""
    assert dot.problem is None
    assert b"\n" not in (out + out2).replace(b"\r\n", b"")
    assert b"\r" not in (out + out2).replace(b"\r\n", b"")


@pytest.mark.parametrize("fake_end", SMUGGLING_ENDS)
def test_smuggling_split_over_every_boundary_is_still_not_an_end(fake_end: bytes) -> None:
    wire = b"x" + fake_end + b"y\r\n.\r\n"
    for cut in range(len(wire) + 1):
        dot = reader()
        out, rest = read_all(dot, [wire[:cut], wire[cut:]])
        assert rest == b"", cut
        assert out.endswith(b"y\r\n"), cut
        assert dot.problem == replies.BARE_LINE_ENDING, cut


def test_crlf_only_body_has_no_problem() -> None:
    dot = reader()
    read_all(dot, [b"a\r\n\r\nb\r\n.\r\n"])
    assert dot.problem is None


# --- long lines and size --------------------------------------------------------------------------


def test_text_line_of_1000_octets_with_crlf_is_accepted_and_1001_refused() -> None:
    ok = reader()
    read_all(ok, [b"x" * 998 + b"\r\n.\r\n"])
    assert ok.problem is None
    long = reader()
    read_all(long, [b"x" * 999 + b"\r\n.\r\n"])
    assert long.problem == replies.TEXT_LINE_TOO_LONG


def test_long_line_split_across_pieces_is_found() -> None:
    for cut in (1, 500, 998, 999, 1000):
        dot = reader()
        line = b"ok\r\n" + b"x" * 999 + b"\r\n.\r\n"
        read_all(dot, [line[:cut], line[cut:]])
        assert dot.problem == replies.TEXT_LINE_TOO_LONG, cut


def test_long_line_in_the_middle_of_a_piece_is_found() -> None:
    dot = reader()
    read_all(dot, [b"a\r\n" * 10 + b"y" * 1200 + b"\r\n" + b"b\r\n" * 10 + b".\r\n"])
    assert dot.problem == replies.TEXT_LINE_TOO_LONG


def test_stuffed_dot_does_not_count_toward_the_line_length() -> None:
    dot = reader()  # RFC 5321 4.5.3.1.6: "not counting the leading dot duplicated for transparency"
    read_all(dot, [b"." + b"x" * 998 + b"\r\n.\r\n"])
    assert dot.problem is None
    read_all(dot := reader(), [b".." + b"x" * 998 + b"\r\n.\r\n"])
    assert dot.problem == replies.TEXT_LINE_TOO_LONG


def test_long_line_in_normalize_mode_counts_bare_endings_as_line_ends() -> None:
    dot = reader(normalize=True)
    read_all(dot, [(b"x" * 900 + b"\n") * 3 + b"\r\n.\r\n"])
    assert dot.problem is None
    read_all(dot := reader(normalize=True), [b"x" * 999 + b"\n.\r\n"])
    assert dot.problem == replies.TEXT_LINE_TOO_LONG


def test_long_lines_may_be_accepted() -> None:
    dot = reader(reject_long_lines=False)
    read_all(dot, [b"x" * 5000 + b"\r\n.\r\n"])
    assert dot.problem is None


def test_message_over_the_size_limit_stops_emitting_but_reads_to_the_end() -> None:
    dot = reader(max_size=10)
    out, rest = read_all(dot, [b"123456789\r\n", b"more\r\n" * 100, b".\r\nQUIT\r\n"])
    assert rest == b"QUIT\r\n"
    assert out == b""  # the first piece already went over (11 octets)
    assert dot.size == 11 + 600
    assert dot.problem == replies.MESSAGE_TOO_BIG


def test_size_limit_is_inclusive() -> None:
    dot = reader(max_size=11)
    assert read_all(dot, [b"123456789\r\n.\r\n"]) == (b"123456789\r\n", b"")
    assert dot.problem is None


def test_too_big_wins_over_bare_line_endings() -> None:
    dot = reader(max_size=3)
    read_all(dot, [b"a\nbcdef\r\n.\r\n"])
    assert dot.problem == replies.MESSAGE_TOO_BIG


def test_nul_octets_are_passed_on() -> None:
    assert read_all(reader(), [b"a\x00b\r\n.\r\n"]) == (b"a\x00b\r\n", b"")


def test_large_body_is_streamed_with_bounded_holdback() -> None:
    dot = reader()
    piece = (b"0123456789" * 7 + b"\r\n") * 900  # ~64 KiB
    for _ in range(16):
        out, rest = dot.feed(piece)
        assert rest is None
        assert len(piece) - 2 <= len(out) <= len(piece)
    assert read_all(dot, [b".\r\n"])[1] == b""
    assert dot.size == 16 * len(piece)
    assert dot.problem is None


# --- properties -----------------------------------------------------------------------------------

_crlf_lines = st.lists(
    st.binary(max_size=40).map(lambda line: line.replace(b"\r", b"").replace(b"\n", b"")) | st.just(b"."),
    max_size=20,
)


@settings(max_examples=200)
@given(lines=_crlf_lines, cuts=st.lists(st.integers(min_value=0, max_value=1000), max_size=8))
def test_any_crlf_body_survives_stuffing_and_any_chunking(lines: list[bytes], cuts: list[int]) -> None:
    body = b"".join(line + b"\r\n" for line in lines)
    dot = reader()
    assert read_all(dot, split_at(stuff(body) + b"NEXT", cuts)) == (body, b"NEXT")
    assert dot.problem is None
    assert dot.size == len(body)


_binary_bodies = st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b"\x00", b"\xff"]), max_size=60
).map(b"".join)


@settings(max_examples=200)
@given(raw=_binary_bodies, cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=8))
def test_any_binary_body_is_normalized_and_ends_only_at_the_real_end(raw: bytes, cuts: list[int]) -> None:
    body = raw + b"\r\n"
    dot = reader(normalize=True)
    assert read_all(dot, split_at(stuff(body), cuts)) == (normalized(body), b"")
    assert dot.problem is None


@settings(max_examples=200)
@given(raw=_binary_bodies, cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=8))
def test_any_binary_body_in_reject_mode_is_flagged_exactly_when_it_has_a_bare_ending(
    raw: bytes, cuts: list[int]
) -> None:
    body = raw + b"\r\n"
    dot = reader()
    out, rest = read_all(dot, split_at(stuff(body), cuts))
    assert (out, rest) == (body, b"")
    has_bare = b"\r" in body.replace(b"\r\n", b"") or b"\n" in body.replace(b"\r\n", b"")
    assert (dot.problem == replies.BARE_LINE_ENDING) is has_bare


@settings(max_examples=200)
@given(
    raw=_binary_bodies,
    cuts=st.lists(st.integers(min_value=0, max_value=100), max_size=8),
    normalize=st.booleans(),
)
def test_crlf_only_says_true_only_of_pieces_whose_every_cr_and_lf_is_a_crlf(
    raw: bytes, cuts: list[int], normalize: bool
) -> None:
    dot = reader(normalize=normalize)
    clean_pieces = 0
    for piece in split_at(stuff(raw + b"\r\n"), cuts):
        out, _ = dot.feed(piece)
        if dot.crlf_only:
            assert out.translate(None, b"\r") == out.replace(b"\r\n", b"\n")
            assert b"\n" not in out.replace(b"\r\n", b"")
            clean_pieces += 1
    if b"\r" not in raw and b"\n" not in raw:
        assert clean_pieces >= 1  # the last CRLF at least came in a piece of its own or with others


@settings(max_examples=200)
@given(
    lengths=st.lists(
        st.integers(min_value=0, max_value=1003) | st.integers(min_value=990, max_value=1003), max_size=8
    ),
    cuts=st.lists(st.integers(min_value=0, max_value=9000), max_size=8),
)
def test_long_lines_are_found_exactly_in_any_chunking(lengths: list[int], cuts: list[int]) -> None:
    body = b"".join(b"x" * length + b"\r\n" for length in lengths)
    dot = reader()
    read_all(dot, split_at(stuff(body), cuts))
    assert (dot.problem == replies.TEXT_LINE_TOO_LONG) is any(length > 998 for length in lengths)


def reference(wire: bytes, *, normalize: bool) -> tuple[bytes, bytes | None]:
    """The whole-buffer meaning of a DATA stream, written as plainly as possible."""
    stream = b"\r\n" + wire
    end = stream.find(b"\r\n.\r\n")
    if end < 0:
        return b"", None  # not ended: compared on ended streams only
    body = stream[: end + 2].replace(b"\r\n.", b"\r\n")[2:]
    return (normalized(body) if normalize else body), stream[end + 5 :]


_soup = st.lists(st.sampled_from([b"\r", b"\n", b"\r\n", b".", b"a", b"\r\n.\r\n", b"x" * 500]), max_size=40)


@settings(max_examples=200)
@given(
    tokens=_soup, cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=8), normalize=st.booleans()
)
def test_any_stream_in_any_chunking_means_what_it_means_as_a_whole(
    tokens: list[bytes], cuts: list[int], normalize: bool
) -> None:
    wire = b"".join(tokens) + b"\r\n.\r\n"
    whole, pieces = reader(normalize=normalize), reader(normalize=normalize)
    expected = reference(wire, normalize=normalize)
    assert read_all(whole, [wire]) == expected
    assert read_all(pieces, split_at(wire, cuts)) == expected
    assert (whole.problem, whole.size) == (pieces.problem, pieces.size)


# --- BDAT chunks ----------------------------------------------------------------------------------


def test_chunk_reader_takes_exactly_its_size_and_leaves_the_rest() -> None:
    chunk = ChunkReader(5, last=False)
    buffer = bytearray(b"ab")
    assert chunk.read(buffer) == b"ab"
    assert (chunk.remaining, buffer) == (3, bytearray())
    buffer += b"c.\r\nQUIT\r\n"
    assert chunk.read(buffer) == b"c.\r"
    assert (chunk.remaining, bytes(buffer)) == (0, b"\nQUIT\r\n")


def test_crlf_only_means_every_cr_and_lf_is_in_a_pair() -> None:
    assert [is_crlf_only(data) for data in (b"", b"abc", b"a\r\nb\r\n")] == [True] * 3
    assert [is_crlf_only(data) for data in (b"a\nb", b"a\rb", b"\n\r", b"\r\r\n\n")] == [False] * 4
