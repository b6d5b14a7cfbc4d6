"""DKIM signing (RFC 6376, RFC 8463): signatures that dkimpy verifies against the key's published record (for
random headers and bodies too), the streamed body hash and the header canonicalization against dkimpy's own,
folding, key choice, reloads, and what stays unsigned."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import dkim
import pytest
from dkim.canonicalization import Relaxed, Simple
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.helpers.fakes import FakeClock, Records, recording_logger

from postroom.config.schema import DkimSettings
from postroom.delivery.dkim_keys import Algorithm, DkimKeys
from postroom.delivery.dkim_sign import BodyHash, DkimSigner, _canonical_header, _header_fields
from postroom.delivery.dsn import DsnSettings, build_dsn
from postroom.observe.log import Logger
from postroom.queue import FailedMessage, FailedRecipient

MESSAGE = (
    b"From: Alice <alice@example.test>\r\n"
    b"To: bob@remote.test\r\n"
    b"Subject:  folded\r\n  subject \r\n"
    b"Date: Sat, 28 Nov 2026 12:00:00 +0000\r\n"
    b"Message-ID: <1@example.test>\r\n"
    b"\r\n"
    b"Hello   there,\t \r\n\r\nbody with  trailing space  \r\n\r\n\r\n"
)


def verifies(message: bytes, keys: DkimKeys, *domains: str) -> bool:
    """dkimpy's verdict, with the TXT records of the keys in ``keys`` as the only DNS."""
    records = {f"{keys.txt_record(d)[0]}.".encode(): keys.txt_record(d)[1].encode() for d in domains}

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return records.get(name, b"")

    return bool(dkim.verify(message, dnsfunc=dnsfunc))


@pytest.fixture
def keys(tmp_path: Path) -> DkimKeys:
    return DkimKeys(tmp_path / "dkim")


def make_signer(keys: DkimKeys, log: Logger, clock: FakeClock, **settings: object) -> DkimSigner:
    return DkimSigner(keys=keys, settings=DkimSettings(**settings), log=log, clock=clock)  # type: ignore[arg-type]


@pytest.mark.parametrize("algorithm", ["rsa", "ed25519"])
def test_signature_verifies_against_the_published_record(
    keys: DkimKeys, log: Logger, clock: FakeClock, algorithm: Algorithm
) -> None:
    keys.generate("example.test", algorithm=algorithm)
    field = make_signer(keys, log, clock).signature(MESSAGE, sender="alice@example.test", queue_id="q1")
    assert field.startswith(b"DKIM-Signature: v=1; a=")
    assert field.endswith(b"\r\n")
    tags = dkim.util.parse_tag_value(field.split(b":", 1)[1])
    expected = b"ed25519-sha256" if algorithm == "ed25519" else b"rsa-sha256"
    assert (tags[b"a"], tags[b"d"], tags[b"s"]) == (expected, b"example.test", b"postroom")
    assert tags[b"c"] == b"relaxed/relaxed"
    assert tags[b"t"] == str(int(clock.now)).encode()
    assert verifies(field + MESSAGE, keys, "example.test")


def test_from_is_oversigned_so_an_added_from_breaks_the_signature(
    keys: DkimKeys, log: Logger, clock: FakeClock
) -> None:
    keys.generate("example.test", bits=1024)
    field = make_signer(keys, log, clock).signature(MESSAGE, sender="", queue_id="q1")
    signed = [name.strip() for name in dkim.util.parse_tag_value(field.split(b":", 1)[1])[b"h"].split(b":")]
    assert signed == [b"from", b"to", b"subject", b"date", b"message-id", b"from"]
    assert not verifies(field + b"From: mallory@evil.test\r\n" + MESSAGE, keys, "example.test")
    assert not verifies(field + MESSAGE.replace(b"Hello", b"Jello"), keys, "example.test")


def test_a_spooled_message_is_hashed_as_a_stream(
    keys: DkimKeys, log: Logger, clock: FakeClock, tmp_path: Path
) -> None:
    keys.generate("example.test", bits=1024)
    lines = b"".join(b"line %d  with\t spaces \r\n" % n + b"\r\n" * (n % 3) for n in range(60_000))
    message = MESSAGE + lines + b"no final line end  "
    path = tmp_path / "spooled"
    path.write_bytes(message)
    assert len(message) > 1_000_000  # many chunks
    field = make_signer(keys, log, clock).signature(path, sender="", queue_id="q1")
    assert verifies(field + message, keys, "example.test")


@pytest.mark.parametrize("canonicalization", ["simple/simple", "relaxed/simple", "simple/relaxed"])
def test_other_canonicalizations_verify(
    keys: DkimKeys, log: Logger, clock: FakeClock, canonicalization: str
) -> None:
    keys.generate("example.test", bits=1024)
    signer = make_signer(keys, log, clock, canonicalization=canonicalization)
    field = signer.signature(MESSAGE, sender="", queue_id="q1")
    assert f"c={canonicalization};".encode() in field
    assert verifies(field + MESSAGE, keys, "example.test")


_BODY_PIECES = st.sampled_from([b"a", b"bc", b" ", b"\t", b"\r\n", b"\r", b"\n", b"  \r\n", b"\r\n\r\n"])


@settings(max_examples=300, deadline=None)
@given(pieces=st.lists(_BODY_PIECES, max_size=30), cuts=st.lists(st.integers(0, 60), max_size=6))
def test_streamed_body_hash_matches_dkimpy_canonicalization(pieces: list[bytes], cuts: list[int]) -> None:
    body = b"".join(pieces)
    for name, reference in (("relaxed", Relaxed), ("simple", Simple)):
        hasher = BodyHash(name)  # type: ignore[arg-type]
        start = 0
        for cut in sorted(cuts):
            hasher.update(body[start : max(start, cut)])
            start = max(start, cut)
        hasher.update(body[start:])
        assert hasher.digest() == hashlib.sha256(reference.canonicalize_body(body)).digest(), name


def test_the_envelope_sender_domain_signs_when_the_from_domain_has_no_key(
    keys: DkimKeys, log: Logger, clock: FakeClock
) -> None:
    keys.generate("relay.test", bits=1024)
    signer = make_signer(keys, log, clock)
    field = signer.signature(MESSAGE, sender="list@relay.test", queue_id="q1")
    assert b"d=relay.test;" in field
    assert verifies(field + MESSAGE, keys, "relay.test")
    keys.generate("example.test", bits=1024)  # now the From: domain has one: it wins
    assert b"d=example.test;" in signer.signature(MESSAGE, sender="list@relay.test", queue_id="q1")


def test_no_key_no_from_or_signing_off_leaves_the_message_unsigned(
    keys: DkimKeys, log: Logger, clock: FakeClock, records: Records
) -> None:
    assert make_signer(keys, log, clock).signature(MESSAGE, sender="a@elsewhere.test", queue_id="q1") == b""
    keys.generate("example.test", bits=1024)
    off = make_signer(keys, log, clock, sign=False)
    assert off.signature(MESSAGE, sender="", queue_id="q1") == b""
    no_from = b"To: bob@remote.test\r\n\r\nhi\r\n"
    assert make_signer(keys, log, clock).signature(no_from, sender="a@example.test", queue_id="q2") == b""
    assert records.events("delivery.dkim_unsigned")[0]["reason"] == "no From: address"


def test_a_header_section_over_256_kib_is_sent_unsigned_with_a_warning(
    keys: DkimKeys, log: Logger, clock: FakeClock, records: Records
) -> None:
    keys.generate("example.test", bits=1024)
    huge = b"From: a@example.test\r\n" + b"X-Filler: " + b"x" * 300_000 + b"\r\n\r\nbody\r\n"
    assert make_signer(keys, log, clock).signature(huge, sender="", queue_id="q9") == b""
    [warning] = records.events("delivery.dkim_unsigned")
    assert warning["queue_id"] == "q9"
    assert warning["level"] == "warning"


def test_a_changed_key_file_is_loaded_again(keys: DkimKeys, log: Logger, clock: FakeClock) -> None:
    keys.generate("example.test", bits=1024)
    signer = make_signer(keys, log, clock)
    first = signer.signature(MESSAGE, sender="", queue_id="q1")
    keys.generate("example.test", bits=1024, force=True)
    second = signer.signature(MESSAGE, sender="", queue_id="q2")
    assert verifies(second + MESSAGE, keys, "example.test")
    assert not verifies(first + MESSAGE, keys, "example.test")


def test_reload_forgets_a_key_even_when_its_file_looks_unchanged(
    keys: DkimKeys, log: Logger, clock: FakeClock, records: Records
) -> None:
    keys.generate("example.test", bits=1024)
    signer = make_signer(keys, log, clock)
    signer.signature(MESSAGE, sender="", queue_id="q1")
    signer.signature(MESSAGE, sender="", queue_id="q2")
    assert len(records.events("dkim.key_loaded")) == 1  # loaded once, not per message
    signer.reload()
    signer.signature(MESSAGE, sender="", queue_id="q3")
    assert len(records.events("dkim.key_loaded")) == 2


def test_an_unreadable_key_sends_the_message_unsigned_and_says_why(
    keys: DkimKeys, log: Logger, clock: FakeClock, records: Records
) -> None:
    path = keys.path("example.test")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"-----BEGIN RSA PRIVATE KEY-----\nbroken\n-----END RSA PRIVATE KEY-----\n")
    os.chmod(path, 0o600)
    assert make_signer(keys, log, clock).signature(MESSAGE, sender="", queue_id="q1") == b""
    assert records.events("delivery.dkim_failed")[0]["queue_id"] == "q1"


def test_a_bounce_from_mailer_daemon_is_signed_for_our_hostname(
    keys: DkimKeys, log: Logger, clock: FakeClock
) -> None:
    keys.generate("mx.example.test", bits=1024)
    failed = FailedMessage(
        queue_id="Q1",
        sender="someone@remote.test",
        received_at=clock.now - 60,
        headers=b"From: someone@remote.test\r\nSubject: hi\r\n",
        recipients=(FailedRecipient(address="x@nowhere.test", status="5.1.2", detail="no such domain"),),
    )
    settings = DsnSettings(
        reporting_mta="mx.example.test", boundary="=_Q1", message_id="Q1.dsn@mx.example.test"
    )
    report = build_dsn(failed, settings=settings, now=clock.now)
    field = make_signer(keys, log, clock).signature(report, sender="", queue_id="Q2")
    assert b"d=mx.example.test;" in field
    assert verifies(field + report, keys, "mx.example.test")


def test_the_field_is_folded_under_79_columns_with_b_on_lines_of_its_own(
    keys: DkimKeys, log: Logger, clock: FakeClock
) -> None:
    keys.generate("example.test")  # rsa-2048: a b= of 344 characters
    names = DkimSettings().headers
    message = b"".join(b"%s: value of %s\r\n" % (name.encode(), name.encode()) for name in names)
    message = message.replace(b"from: value of from", b"From: a@example.test") + b"\r\nbody\r\n"
    field = make_signer(keys, log, clock).signature(message, sender="", queue_id="q1")
    lines = field.removesuffix(b"\r\n").split(b"\r\n")
    assert len(lines) > 6
    assert all(len(line) <= 78 for line in lines)
    assert all(line.startswith(b" ") for line in lines[1:])  # folded with FWS, no empty line
    b_at = next(n for n, line in enumerate(lines) if line.startswith(b" b="))
    assert all(b";" not in line for line in lines[b_at:])  # b= is the last tag
    assert verifies(field + message, keys, "example.test")


def test_a_header_section_that_is_not_one_is_sent_unsigned_and_says_why(
    keys: DkimKeys, log: Logger, clock: FakeClock, records: Records
) -> None:
    keys.generate("example.test", bits=1024)
    for queue_id, message in (
        ("q1", b" folded: first\r\n" + MESSAGE),
        ("q2", b"no colon here\r\n" + MESSAGE),
    ):
        assert make_signer(keys, log, clock).signature(message, sender="", queue_id=queue_id) == b""
    assert [record["queue_id"] for record in records.events("delivery.dkim_failed")] == ["q1", "q2"]


_NAMES = st.sampled_from(
    [b"From", b"from", b"To", b"Subject", b"SUBJECT", b"Date", b"X-Custom", b"cc", b"Received"]
)
_VALUE_PIECES = st.sampled_from(
    [b"a", b"Bc", b" ", b"\t", b"  ", b"\r\n ", b"\r\n\t", b":", b";", b"b=x", b"\xc3\xa9", b"<x@y.test>"]
)
_VALUES = st.lists(_VALUE_PIECES, max_size=12).map(lambda pieces: b"".join(pieces).removeprefix(b"\r\n"))
_FIELDS = st.lists(st.tuples(_NAMES, _VALUES), max_size=8)


def _section(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"".join(name + b":" + value + b"\r\n" for name, value in fields)


@settings(max_examples=300, deadline=None)
@given(fields=_FIELDS)
def test__header_fields_and__canonical_header_match_dkimpy(fields: list[tuple[bytes, bytes]]) -> None:
    block = _section(fields) + b"\r\n"
    ours = _header_fields(block)
    assert ours == [(name, value) for name, value in dkim.rfc822_parse(block)[0]]
    for relaxed, reference in ((True, Relaxed), (False, Simple)):
        expected = [name + b":" + value for name, value in reference.canonicalize_headers(ours)]
        assert [_canonical_header(name, value, relaxed=relaxed) for name, value in ours] == expected


@pytest.fixture(scope="module")
def both_keys(tmp_path_factory: pytest.TempPathFactory) -> DkimKeys:
    """rsa.test signs with RSA-2048, ed.test with ed25519: made once, for every example."""
    keys = DkimKeys(tmp_path_factory.mktemp("dkim"))
    keys.generate("rsa.test", algorithm="rsa")
    keys.generate("ed.test", algorithm="ed25519")
    return keys


_CANONICALIZATIONS = st.sampled_from(["relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple"])
_SIGNING_BODY = st.lists(
    st.sampled_from([b"a", b"bc", b" ", b"\t", b"\r\n", b"  \r\n", b"\r\n\r\n", b"\xc3\xa9"]), max_size=30
).map(b"".join)


_DISPLAY_NAMES = st.lists(
    st.sampled_from([b"Al", b"ice", b" ", b"\t", b"\r\n ", b"\xc3\xa9"]), max_size=8
).map(lambda pieces: b"".join(pieces).removeprefix(b"\r\n"))


@st.composite
def _messages(draw: st.DrawFn, domain: str) -> bytes:
    """Random header fields around one From: at ``domain`` (the others never From:), a random body."""
    before, after = (
        [(name, value) for name, value in draw(_FIELDS) if name.lower() != b"from"] for _ in range(2)
    )
    sender = (b"From", draw(_DISPLAY_NAMES) + b" <alice@" + domain.encode() + b">")
    return _section([*before, sender, *after]) + b"\r\n" + draw(_SIGNING_BODY)


@settings(max_examples=100, deadline=None)
@given(domain=st.sampled_from(["rsa.test", "ed.test"]), canonicalization=_CANONICALIZATIONS, data=st.data())
def test_random_messages_signed_with_any_canonicalization_and_algorithm_verify_with_dkimpy(
    both_keys: DkimKeys, domain: str, canonicalization: str, data: st.DataObject
) -> None:
    message = data.draw(_messages(domain))
    records = Records()
    signer = make_signer(both_keys, recording_logger(records), FakeClock(), canonicalization=canonicalization)
    field = signer.signature(message, sender="", queue_id="q1")
    assert records.events("delivery.dkim_signed"), records
    assert f"c={canonicalization};".encode() in field
    assert verifies(field + message, both_keys, domain)
    assert not verifies(field + message.replace(b"alice@", b"mallory@"), both_keys, domain)
