"""Frames between the server and its commit process (commit_process.py, committer.py): a 4-byte big-endian
length, then a pickle. Both ends are this program, so unpickling is safe here and nowhere else."""

from __future__ import annotations

import pickle
import struct
from typing import Any

__all__ = ["HEADER", "decode", "encode", "split"]

HEADER = struct.Struct(">I")


def encode(value: object) -> bytes:
    data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


def decode(frame: bytes | bytearray) -> Any:
    return pickle.loads(frame)  # noqa: S301 - written by our own other end (see the module docstring)


def split(buffer: bytearray) -> list[bytes]:
    """Takes the whole frames (without their length) off the front of ``buffer``; a partial one stays."""
    frames = []
    while len(buffer) >= HEADER.size:
        (length,) = HEADER.unpack_from(buffer)
        if len(buffer) < HEADER.size + length:
            break
        frames.append(bytes(buffer[HEADER.size : HEADER.size + length]))
        del buffer[: HEADER.size + length]
    return frames
