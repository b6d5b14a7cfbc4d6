"""What changed between two Configs, as dotted keys ("smtp.max_message_size"), and which of those a running
server takes live. Pure: no file reading, no knowledge of who applies a change (app.py does)."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from postroom.config.schema import Config

__all__ = ["ConfigChange", "adopt", "changed_keys", "compare"]

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class ConfigChange:
    """The keys whose values differ, split into those taken live and those that wait for a restart.
    ``config`` is the old Config with the live keys taken from the new one: what is in effect now."""

    live: tuple[str, ...]
    restart: tuple[str, ...]
    config: Config


def changed_keys(old: Any, new: Any, prefix: str = "") -> tuple[str, ...]:
    """Dotted keys of the leaf values that differ between two dataclasses of the same type, in field order.
    Tables inside tables ([policy.smtp]) are followed down; anything else (tuples, paths) is one value."""
    keys: list[str] = []
    for item in dataclasses.fields(old):
        before, after = getattr(old, item.name), getattr(new, item.name)
        if before == after:
            continue
        key = f"{prefix}{item.name}"
        if dataclasses.is_dataclass(before) and type(before) is type(after):
            keys.extend(changed_keys(before, after, f"{key}."))
        else:
            keys.append(key)
    return tuple(keys)


def _covers(entry: str, key: str) -> bool:
    """``entry`` is the key itself or a table above it ("policy" covers "policy.smtp.deny")."""
    return key == entry or key.startswith(f"{entry}.")


def adopt(old: _T, new: _T, keys: Iterable[str]) -> _T:
    """``old`` with the values at ``keys`` taken from ``new`` (both frozen dataclasses of one type)."""
    result = old
    for key in keys:
        result = _replace_at(result, new, key.split("."))
    return result


def _replace_at(target: Any, source: Any, path: list[str]) -> Any:
    name, rest = path[0], path[1:]
    value = getattr(source, name)
    if rest:
        value = _replace_at(getattr(target, name), value, rest)
    return dataclasses.replace(target, **{name: value})


def compare(old: Config, new: Config, *, live: Collection[str]) -> ConfigChange:
    """Split what differs into ``live`` keys (each entry a key or a whole table) and the rest."""
    keys = changed_keys(old, new)
    taken = tuple(key for key in keys if any(_covers(entry, key) for entry in live))
    waiting = tuple(key for key in keys if key not in taken)
    return ConfigChange(live=taken, restart=waiting, config=adopt(old, new, taken))
