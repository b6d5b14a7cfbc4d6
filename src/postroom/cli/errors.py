"""The one error type of the command line: a sentence for the user and the exit status (sysexits.h)."""

from __future__ import annotations

__all__ = [
    "EX_DATAERR",
    "EX_NOPERM",
    "EX_NOUSER",
    "EX_PROTOCOL",
    "EX_TEMPFAIL",
    "EX_UNAVAILABLE",
    "EX_USAGE",
    "CliError",
]

# sysexits.h: what scripts and cron look at
EX_USAGE = 64
EX_DATAERR = 65
EX_NOUSER = 67
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_PROTOCOL = 76
EX_NOPERM = 77


class CliError(Exception):
    """Printed as ``postroom: <message>`` on one line; the process exits with ``status``."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status
