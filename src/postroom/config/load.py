"""Read a TOML file into a frozen Config; every error names the key and says what is wrong, in one line."""

from __future__ import annotations

import dataclasses
import ipaddress
import tomllib
import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from postroom.config.schema import Config, ListenAddress

__all__ = ["ConfigError", "load_config", "parse_config", "parse_listen"]


class ConfigError(Exception):
    """A configuration problem, worded for the operator: '<key>: <problem>'."""


def load_config(path: Path | None) -> Config:
    """The Config in ``path``, or the embedded defaults when ``path`` is None."""
    if path is None:
        return Config()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the configuration file is not UTF-8") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    config = parse_config(data)
    if not config.data_dir.is_absolute():
        # Relative paths in a file are relative to the file, so the server finds its data from anywhere.
        config = dataclasses.replace(config, data_dir=path.parent / config.data_dir)
    return config


def parse_config(data: dict[str, Any]) -> Config:
    """Build and validate a Config from parsed TOML."""
    config: Config = _build(Config, data, "")
    _validate(config)
    return config


def parse_listen(value: str, key: str = "listen") -> ListenAddress:
    """'host:port' or '[v6]:port' into a ListenAddress."""
    host, sep, port_text = value.rpartition(":")
    if not sep or not host or not port_text.isdigit():
        raise ConfigError(f"{key}: expected 'host:port', got {value!r}")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ConfigError(f"{key}: port {port} is out of range 0..65535")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ConfigError(f"{key}: {host!r} is not an IP address") from None
    return ListenAddress(host, port)


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    fields = {field.name: field for field in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(f"{key}: unknown key")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(typing.cast(type[Any], hint), value, f"{key}.")
        else:
            kwargs[name] = _convert(hint, value, key)
    return cls(**kwargs)


def _convert(hint: Any, value: Any, key: str) -> Any:
    origin = get_origin(hint)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if hint is Path or (origin in (types.UnionType, typing.Union) and Path in get_args(hint)):
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{key}: expected a path, got {value!r}")
        return Path(value)
    if origin is Literal:
        if value not in get_args(hint):
            choices = ", ".join(repr(choice) for choice in get_args(hint))
            raise ConfigError(f"{key}: expected one of {choices}, got {value!r}")
        return value
    if hint is ListenAddress:
        return _listen(value, key)
    if origin is tuple:
        return _convert_tuple(hint, value, key)
    raise ConfigError(f"{key}: unsupported setting type")  # pragma: no cover - schema bug


def _convert_tuple(hint: Any, value: Any, key: str) -> tuple[Any, ...]:
    item_hint = get_args(hint)[0]
    items = value if isinstance(value, list) else [value]
    if item_hint is ListenAddress:
        return tuple(_listen(item, key) for item in items)
    if get_origin(item_hint) is tuple:  # (host, port) pairs: nameservers
        return tuple(_host_port(item, key) for item in items)
    if get_origin(item_hint) in (types.UnionType, typing.Union):  # networks
        return tuple(_network(item, key) for item in items)
    return tuple(_convert(item_hint, item, f"{key}[{index}]") for index, item in enumerate(items))


def _listen(value: Any, key: str) -> ListenAddress:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected 'host:port', got {value!r}")
    return parse_listen(value, key)


def _host_port(value: Any, key: str) -> tuple[str, int]:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected 'host:port' or 'host', got {value!r}")
    if value.count(":") == 1 or value.startswith("["):
        address = parse_listen(value, key)
        return (address.host, address.port)
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an IP address") from None
    return (value, 53)


def _network(value: Any, key: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    if not isinstance(value, str):
        raise ConfigError(f"{key}: expected a CIDR string, got {value!r}")
    try:
        return ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ConfigError(f"{key}: {value!r} is not an IP network (CIDR)") from None


def _validate(config: Config) -> None:
    if not config.hostname or " " in config.hostname:
        raise ConfigError("hostname: must be a domain name")
    smtp = config.smtp
    for name in ("command_timeout", "data_timeout", "shutdown_grace"):
        if getattr(smtp, name) <= 0:
            raise ConfigError(f"smtp.{name}: must be greater than 0")
    for name in ("max_connections", "max_connections_per_ip", "max_errors"):
        if getattr(smtp, name) < 1:
            raise ConfigError(f"smtp.{name}: must be at least 1")
    if smtp.max_recipients < 100:
        raise ConfigError("smtp.max_recipients: must be at least 100 (RFC 5321 4.5.3.1.8)")
    if smtp.max_message_size < 0:
        raise ConfigError("smtp.max_message_size: must be 0 (no limit) or more")
    if not config.local.domains:
        raise ConfigError("local.domains: at least one local domain is needed")
    if (config.tls.cert_file is None) != (config.tls.key_file is None):
        raise ConfigError("tls: cert_file and key_file must be given together")
    if not config.queue.retry_schedule or min(config.queue.retry_schedule) <= 0:
        raise ConfigError("queue.retry_schedule: needs at least one interval, each greater than 0")
    if config.queue.inline_max < 0:
        raise ConfigError("queue.inline_max: must be 0 (always a spool file) or more")
    if config.delivery.concurrency < 1:
        raise ConfigError("delivery.concurrency: must be at least 1")
    if not 1 <= config.delivery.smtp_port <= 65535:
        raise ConfigError("delivery.smtp_port: must be 1..65535")
    _validate_delivery(config)


def _validate_delivery(config: Config) -> None:
    delivery = config.delivery
    for name in ("max_connections", "max_connections_per_domain", "max_received"):
        if getattr(delivery, name) < 1:
            raise ConfigError(f"delivery.{name}: must be at least 1")
    for name in ("connect_timeout", "command_timeout"):
        if getattr(delivery, name) <= 0:
            raise ConfigError(f"delivery.{name}: must be greater than 0")
    for index, domain in enumerate(delivery.require_tls):
        if not domain or " " in domain or "@" in domain:
            raise ConfigError(f"delivery.require_tls[{index}]: {domain!r} is not a domain name")
