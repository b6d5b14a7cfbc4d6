"""Password hashing with argon2id (argon2-cffi). Never logs or returns a password."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["hash_password", "verify_password"]

_HASHER = PasswordHasher()  # immutable parameters (RFC 9106 defaults); not mutable state


def hash_password(password: str) -> str:
    if not password:
        raise ValueError("a password must not be empty")
    return str(_HASHER.hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return bool(_HASHER.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False
