"""Plain value objects every room may use: Address, Status, Reply. No parsing here (see grammar.py)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Address", "Reply", "Status"]


@dataclass(frozen=True, slots=True)
class Status:
    """An enhanced mail system status code (RFC 3463): class.subject.detail, e.g. 5.7.1."""

    klass: int
    subject: int
    detail: int

    def __post_init__(self) -> None:
        if self.klass not in (2, 4, 5):
            raise ValueError(f"status class must be 2, 4 or 5, not {self.klass}")
        if not (0 <= self.subject <= 999 and 0 <= self.detail <= 999):
            raise ValueError("status subject and detail must be 0..999")

    def __str__(self) -> str:
        return f"{self.klass}.{self.subject}.{self.detail}"


@dataclass(frozen=True, slots=True)
class Reply:
    """One SMTP reply: a code, an enhanced status (None only for 220/221/334/354), and human text.

    ``text`` may hold several lines separated by "\\n"; they are sent as a multi-line reply.
    """

    code: int
    status: Status | None
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"reply code out of range: {self.code}")
        if self.status is not None and self.status.klass != self.code // 100:
            raise ValueError(f"status {self.status} does not match reply code {self.code}")
        if "\r" in self.text:
            raise ValueError("reply text must not contain CR")

    @property
    def is_positive(self) -> bool:
        return self.code < 400

    @property
    def is_temporary(self) -> bool:
        return 400 <= self.code < 500

    @property
    def is_permanent(self) -> bool:
        return self.code >= 500

    def lines(self) -> list[str]:
        return self.text.split("\n") if self.text else [""]

    def to_bytes(self) -> bytes:
        """The reply on the wire: each line carries the code and, when set, the enhanced status (RFC 2034)."""
        prefix = f"{self.status} " if self.status is not None else ""
        lines = self.lines()
        out = []
        for index, line in enumerate(lines):
            separator = " " if index == len(lines) - 1 else "-"
            out.append(f"{self.code}{separator}{prefix}{line}\r\n")
        return "".join(out).encode("utf-8")

    def __str__(self) -> str:
        prefix = f"{self.status} " if self.status is not None else ""
        return f"{self.code} {prefix}{self.text}"


@dataclass(frozen=True, slots=True)
class Address:
    """An SMTP mailbox: local part and domain, as the client sent them (case kept).

    ``local_part`` is the unquoted form (quotes and backslash escapes removed); ``domain`` is a domain name
    (no trailing dot) or a domain literal with its brackets, e.g. "[192.0.2.1]". The null reverse path
    ``<>`` is not an Address: the protocol gives ``None`` for it.
    """

    local_part: str
    domain: str

    @property
    def needs_smtputf8(self) -> bool:
        return not (self.local_part.isascii() and self.domain.isascii())

    def quoted_local_part(self) -> str:
        """The local part as it must be written on the wire: dot-atom when possible, else a quoted string."""
        if _is_dot_atom(self.local_part):
            return self.local_part
        escaped = self.local_part.replace("\\", "\\\\").replace('"', '\\"')
        return f'"{escaped}"'

    def normalized(self) -> str:
        """The key for lookups: local part kept as is, domain lower-cased (RFC 5321 2.4: local part is
        case-sensitive in principle; callers that want case-insensitive mailboxes lower-case it)."""
        return f"{self.local_part}@{self.domain.lower()}"

    def __str__(self) -> str:
        return f"{self.quoted_local_part()}@{self.domain}"


_ATEXT_SPECIALS = frozenset("!#$%&'*+-/=?^_`{|}~")


def _is_atext(char: str) -> bool:
    return char.isalnum() if char.isascii() else True  # RFC 6531: UTF-8 non-ASCII is atext


def _is_dot_atom(text: str) -> bool:
    if not text or text.startswith(".") or text.endswith(".") or ".." in text:
        return False
    return all(_is_atext(char) or char in _ATEXT_SPECIALS or char == "." for char in text)
