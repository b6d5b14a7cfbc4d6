"""outcome.classify: which failures are temporary and which permanent."""

from __future__ import annotations

import errno

import pytest

from postroom.delivery.outcome import SpoolFileMissingError, classify, describe, failed
from postroom.queue import DueRecipient


@pytest.mark.parametrize(
    "code", [errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EIO, errno.EROFS, errno.ENOTDIR]
)
def test_fixable_storage_errors_are_temporary(code: int) -> None:
    assert classify(OSError(code, "x")) == "temporary"


def test_unfixable_failures_are_permanent() -> None:
    assert classify(OSError(errno.ENAMETOOLONG, "too long")) == "permanent"
    assert classify(ValueError("no domain")) == "permanent"
    assert classify(SpoolFileMissingError("gone")) == "permanent"


def test_bugs_are_temporary_so_the_message_waits() -> None:
    assert classify(KeyError("bug")) == "temporary"


def test_describe_names_the_errno_without_paths() -> None:
    text = describe(OSError(errno.ENOSPC, "No space left on device", "/secret/path"))
    assert text == "No space left on device (ENOSPC)"


def test_failed_builds_the_outcome_for_the_recipient() -> None:
    recipient = DueRecipient("q", 3, "a@x", "a@x", "", 1, 0.0)
    outcome = failed(recipient, OSError(errno.EIO, "I/O error"))
    assert (outcome.queue_id, outcome.idx, outcome.result) == ("q", 3, "temporary")
