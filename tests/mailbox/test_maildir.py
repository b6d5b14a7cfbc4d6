"""Maildir: delivery (tmp -> new, CRLF -> LF), names, listing, flags, and paths that stay in the tree."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postroom.mailbox import Maildir, Maildirs, folder_name

BLOCK = 128 * 1024


@pytest.fixture
def maildirs(tmp_path: Path) -> Maildirs:
    return Maildirs(tmp_path / "mailboxes", hostname="mx.example.test")


def test_deliver_writes_prefix_then_message_with_lf_line_endings(maildirs: Maildirs) -> None:
    box = maildirs.for_address("alice@example.test")
    name = box.deliver(io.BytesIO(b"Subject: hi\r\n\r\nline\r\n"), prefix_headers=b"Return-Path: <a@b>\r\n")
    assert (box.path / "new" / name).read_bytes() == b"Return-Path: <a@b>\nSubject: hi\n\nline\n"
    assert os.listdir(box.path / "tmp") == []
    assert box.path == maildirs.root / "example.test" / "alice"


def test_a_crlf_split_across_blocks_becomes_one_lf(maildirs: Maildirs) -> None:
    body = b"a" * (BLOCK - 1) + b"\r\n" + b"b" * BLOCK + b"\r" + b"\r\n" + b"z\r"
    box = maildirs.for_address("alice@example.test")
    name = box.deliver(io.BytesIO(body))
    # the split CRLF turns into LF; a bare CR stays, also at the very end
    assert box.read(name) == b"a" * (BLOCK - 1) + b"\n" + b"b" * BLOCK + b"\r\n" + b"z\r"


@given(
    lines=st.lists(st.binary(max_size=40).filter(lambda b: b"\r" not in b and b"\n" not in b), max_size=30)
)
def test_crlf_conversion_matches_a_simple_replace(
    tmp_path_factory: pytest.TempPathFactory, lines: list[bytes]
) -> None:
    body = b"\r\n".join(lines) + b"\r\n"
    box = Maildirs(tmp_path_factory.mktemp("m"), hostname="h").for_address("a@b")
    name = box.deliver(io.BytesIO(body))
    assert box.read(name) == body.replace(b"\r\n", b"\n")


def test_deliver_from_a_path_streams_the_file(maildirs: Maildirs, tmp_path: Path) -> None:
    source = tmp_path / "message"
    source.write_bytes(b"x" * (3 * BLOCK + 7) + b"\r\n")
    box = maildirs.for_address("alice@example.test")
    name = box.deliver(source)
    assert box.read(name) == b"x" * (3 * BLOCK + 7) + b"\n"


def test_names_are_unique_and_carry_the_size(maildirs: Maildirs) -> None:
    box = maildirs.for_address("alice@example.test")
    names = {box.deliver(io.BytesIO(b"m\r\n")) for _ in range(200)}
    assert len(names) == 200
    for name in names:
        assert ":" not in name
        assert "/" not in name
        assert name.endswith(",S=2")
        assert (box.path / "new" / name).stat().st_size == 2
        assert ".mx.example.test," in name


def test_hostname_separators_are_escaped(tmp_path: Path) -> None:
    box = Maildirs(tmp_path, hostname="odd/host:name").for_address("a@b")
    name = box.deliver(io.BytesIO(b"m"))
    assert "odd\\057host\\072name" in name


def test_missing_folders_are_made_again(maildirs: Maildirs) -> None:
    box = maildirs.for_address("alice@example.test")
    for sub in ("cur", "new", "tmp"):
        (box.path / sub).rmdir()
    name = box.deliver(io.BytesIO(b"m"))
    assert box.read(name) == b"m"


def test_list_read_and_set_flags(maildirs: Maildirs) -> None:
    box = maildirs.for_address("alice@example.test")
    first = box.deliver(io.BytesIO(b"one"))
    second = box.deliver(io.BytesIO(b"two"))
    assert [(m.name, m.flags, m.is_new) for m in box.list()] == sorted(
        [(first, "", True), (second, "", True)]
    )
    box.set_flags(first, "SRS")
    assert (box.path / "cur" / f"{first}:2,RS").exists()
    assert box.read(first) == b"one"
    box.set_flags(first, "T")
    assert {m.name: (m.flags, m.is_new) for m in box.list()} == {first: ("T", False), second: ("", True)}
    with pytest.raises(ValueError, match="letters"):
        box.set_flags(second, "S,")
    with pytest.raises(FileNotFoundError):
        box.read("nope")
    with pytest.raises(ValueError, match="name"):
        box.read("../x")


def test_list_of_a_fresh_maildir_is_empty(tmp_path: Path) -> None:
    assert Maildir(path=tmp_path / "none", hostname="h").list() == []


@pytest.mark.parametrize(
    ("address", "domain", "local"),
    [
        ("../..@example.test", "example.test", "%2E.%2F.."),
        ("..@..", "%2E.", "%2E."),
        (".@.", "%2E", "%2E"),
        ("a/b@c/d", "c%2Fd", "a%2Fb"),
        ("a\0b@x", "x", "a%00b"),
        ("100%@x", "x", "100%25"),
        (".hidden@x", "x", "%2Ehidden"),
    ],
)
def test_hostile_names_are_encoded(maildirs: Maildirs, address: str, domain: str, local: str) -> None:
    assert maildirs.path_for(address) == maildirs.root / domain / local


def test_an_address_without_domain_or_local_part_has_no_mailbox(maildirs: Maildirs) -> None:
    for bad in ("nodomain", "@x", "a@"):
        with pytest.raises(ValueError):  # noqa: PT011 - either message is fine
            maildirs.path_for(bad)


@given(part=st.text(min_size=1, max_size=30))
def test_folder_names_stay_one_safe_component(part: str) -> None:
    name = folder_name(part)
    assert "/" not in name
    assert "\0" not in name
    assert name not in ("", ".", "..")
    assert not name.startswith(".")


@given(a=st.text(min_size=1, max_size=10), b=st.text(min_size=1, max_size=10))
def test_folder_names_are_one_to_one(a: str, b: str) -> None:
    assert (folder_name(a) == folder_name(b)) == (a == b)
