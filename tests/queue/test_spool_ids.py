"""Queue ids of several worker processes (``id_slot``) and rename_new, which never replaces a spool file."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from postroom.queue.spool import Spool, link_new, rename_new

FROZEN = 1_700_000_000.0  # every id below is made in the same microsecond: only the counter moves


def test_ids_carry_the_slot_digit_at_index_13_and_strictly_increase(tmp_path: Path) -> None:
    spool = Spool(queue_dir=tmp_path, clock=lambda: FROZEN, id_slot=3)
    ids = [spool.new_queue_id() for _ in range(2000)]
    assert all(len(queue_id) == 16 and queue_id[13] == "3" for queue_id in ids)
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))


def test_ids_strictly_increase_when_the_clock_steps_back(tmp_path: Path) -> None:
    times = iter([FROZEN + 1.0, FROZEN + 1.0, FROZEN, FROZEN - 5.0, FROZEN + 2.0])
    spool = Spool(queue_dir=tmp_path, clock=lambda: next(times), id_slot=7)
    ids = [spool.new_queue_id() for _ in range(5)]
    assert all(earlier < later for earlier, later in itertools.pairwise(ids))
    assert all(queue_id[13] == "7" for queue_id in ids)


@pytest.mark.parametrize("slot", range(1, 16))
def test_every_slot_is_one_hex_digit(tmp_path: Path, slot: int) -> None:
    spool = Spool(queue_dir=tmp_path, clock=lambda: FROZEN, id_slot=slot)
    assert {spool.new_queue_id()[13] for _ in range(50)} == {f"{slot:x}"}


def test_two_workers_in_the_same_microsecond_never_share_an_id(tmp_path: Path) -> None:
    first = Spool(queue_dir=tmp_path, clock=lambda: FROZEN, id_slot=1)
    second = Spool(queue_dir=tmp_path, clock=lambda: FROZEN, id_slot=2)
    ids_first = {first.new_queue_id() for _ in range(1000)}
    ids_second = {second.new_queue_id() for _ in range(1000)}
    assert len(ids_first) == len(ids_second) == 1000
    assert not ids_first & ids_second


def test_without_a_slot_the_digit_is_drawn_at_random(tmp_path: Path) -> None:
    spool = Spool(queue_dir=tmp_path, clock=lambda: FROZEN)
    digits = {spool.new_queue_id()[13] for _ in range(500)}
    assert len(digits) > 1  # 500 draws of 16 values: one value only has a chance of 16**-499


@pytest.mark.parametrize("slot", [16, -1, 255])
def test_a_slot_beyond_one_hex_digit_is_refused(tmp_path: Path, slot: int) -> None:
    with pytest.raises(ValueError, match="id_slot"):
        Spool(queue_dir=tmp_path, clock=lambda: FROZEN, id_slot=slot)


Rename = Callable[[Path, Path], None]
# rename_new (renameat2 with RENAME_NOREPLACE where the kernel has it) and its fallback for kernels and file
# systems without it (a hard link, then an unlink of the source): both must keep the same promise.
RENAMES = pytest.mark.parametrize("rename", [rename_new, link_new], ids=["rename_new", "link_new"])


@RENAMES
def test_rename_new_moves_the_file_when_the_target_is_absent(tmp_path: Path, rename: Rename) -> None:
    source, target = tmp_path / "incoming", tmp_path / "spool"
    source.write_bytes(b"message")
    rename(source, target)
    assert not source.exists()
    assert target.read_bytes() == b"message"


@RENAMES
def test_rename_new_never_replaces_an_existing_file(tmp_path: Path, rename: Rename) -> None:
    source, target = tmp_path / "incoming", tmp_path / "spool"
    source.write_bytes(b"new message")
    target.write_bytes(b"another process's message")
    with pytest.raises(FileExistsError):
        rename(source, target)
    assert source.read_bytes() == b"new message"
    assert target.read_bytes() == b"another process's message"


@RENAMES
def test_rename_new_of_a_missing_source_leaves_the_target_alone(tmp_path: Path, rename: Rename) -> None:
    source, target = tmp_path / "incoming", tmp_path / "spool"
    with pytest.raises(FileNotFoundError):
        rename(source, target)
    assert not target.exists()
