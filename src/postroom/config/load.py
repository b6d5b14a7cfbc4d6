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
    if not 0 <= config.workers <= 15:
        raise ConfigError("workers: must be 0 (one per CPU core) or 1..15")
    if config.delivery.own_process and config.workers > 14:
        raise ConfigError("workers: at most 14 with delivery.own_process (the delivery process is the 15th)")
    smtp = config.smtp
    for name in ("command_timeout", "data_timeout", "shutdown_grace"):
        if getattr(smtp, name) <= 0:
            raise ConfigError(f"smtp.{name}: must be greater than 0")
    for name in ("max_connections", "max_connections_per_ip", "max_errors"):
        if getattr(smtp, name) < 1:
            raise ConfigError(f"smtp.{name}: must be at least 1")
    if config.dns.cache_size < 0:
        raise ConfigError("dns.cache_size: must be 0 (no cache) or more")
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
    if not 0 <= config.delivery.gather <= 1:
        raise ConfigError("delivery.gather: must be 0..1 seconds")
    if config.delivery.concurrency < 1:
        raise ConfigError("delivery.concurrency: must be at least 1")
    if not 1 <= config.delivery.smtp_port <= 65535:
        raise ConfigError("delivery.smtp_port: must be 1..65535")
    if not 1 <= config.delivery.mta_sts_port <= 65535:
        raise ConfigError("delivery.mta_sts_port: must be 1..65535")
    _validate_delivery(config)
    _validate_dkim(config)
    _validate_sender_auth(config)
    _validate_policy(config)
    _validate_admin(config)
    _validate_limits(config)
    _validate_auth(config)


def _validate_auth(config: Config) -> None:
    auth = config.auth
    if auth.throttle_free_failures < 0 or auth.throttle_max_delay < 0 or auth.throttle_window <= 0:
        raise ConfigError("auth: throttle_free_failures and throttle_max_delay must be 0 or more, window > 0")
    if auth.throttle_lockout_failures <= auth.throttle_free_failures:
        raise ConfigError("auth.throttle_lockout_failures: must be more than throttle_free_failures")
    if not 4096 <= auth.scram_iterations <= 10_000_000:  # RFC 7677 4's floor; clients refuse huge counts
        raise ConfigError("auth.scram_iterations: must be 4096..10000000")


def _validate_limits(config: Config) -> None:
    limits, greylist = config.limits, config.greylist
    rates = ("connections_per_minute", "messages_per_connection", "recipients_per_hour", "bytes_per_hour")
    for name in rates:
        if getattr(limits, name) < 0:
            raise ConfigError(f"limits.{name}: must be 0 (no limit) or more")
    if limits.flush_interval <= 0:
        raise ConfigError("limits.flush_interval: must be greater than 0")
    if greylist.delay < 0:
        raise ConfigError("greylist.delay: must be 0 or more")
    for name in ("unconfirmed_ttl", "confirmed_ttl"):
        if getattr(greylist, name) <= greylist.delay:
            raise ConfigError(f"greylist.{name}: must be longer than greylist.delay")
    for index, domain in enumerate(greylist.allow_domains):
        if not domain or " " in domain or "@" in domain:
            raise ConfigError(f"greylist.allow_domains[{index}]: {domain!r} is not a domain name")


def _validate_admin(config: Config) -> None:
    admin = config.admin
    if admin.password_hash and not admin.password_hash.startswith("$argon2id$"):
        raise ConfigError("admin.password_hash: expected an argon2id hash (see `postroom admin passwd`)")
    if admin.session_lifetime <= 0:
        raise ConfigError("admin.session_lifetime: must be greater than 0")


# RFC 6376 5.4.1: fields that are changed or added in transit; dkimpy refuses to sign them
_DKIM_NEVER_SIGNED = {
    "return-path", "received", "comments", "keywords", "bcc", "resent-bcc", "dkim-signature",
}


def _validate_dkim(config: Config) -> None:
    dkim = config.dkim
    labels = dkim.selector.split(".")
    if not all(label and all(c.isascii() and (c.isalnum() or c in "-_") for c in label) for label in labels):
        raise ConfigError(f"dkim.selector: {dkim.selector!r} is not a DNS label (letters, digits, '-', '_')")
    if not 1024 <= dkim.rsa_bits <= 8192:
        raise ConfigError("dkim.rsa_bits: must be 1024..8192 (RFC 8301: at least 1024; 2048 advised)")
    headers = {name.lower() for name in dkim.headers}
    if "from" not in headers:
        raise ConfigError("dkim.headers: must include 'from' (RFC 6376 5.4)")
    for key, names in (("headers", dkim.headers), ("oversign", dkim.oversign)):
        for index, name in enumerate(names):
            if name.lower() in _DKIM_NEVER_SIGNED:
                raise ConfigError(f"dkim.{key}[{index}]: {name!r} changes in transit and must not be signed")
            if not name or not all(33 <= ord(c) <= 126 and c != ":" for c in name):
                raise ConfigError(f"dkim.{key}[{index}]: {name!r} is not a header field name")


def _validate_sender_auth(config: Config) -> None:
    sender_auth = config.sender_auth
    if sender_auth.dkim_max_size < 0:
        raise ConfigError("sender_auth.dkim_max_size: must be 0 (never verify) or more")
    if sender_auth.dkim_max_signatures < 1:
        raise ConfigError("sender_auth.dkim_max_signatures: must be at least 1")
    if not 512 <= sender_auth.dkim_min_key_bits <= 8192:
        raise ConfigError("sender_auth.dkim_min_key_bits: must be 512..8192 (RFC 8301 asks for 1024)")


def _validate_delivery(config: Config) -> None:
    delivery = config.delivery
    host, _, port = delivery.relay_host.rpartition(":")
    if delivery.relay_host and not (host and port.isdigit() and 1 <= int(port) <= 65535):
        raise ConfigError(f"delivery.relay_host: expected 'host:port', got {delivery.relay_host!r}")
    if delivery.relay_user and delivery.relay_password_file is None:
        raise ConfigError("delivery.relay_password_file: needed when relay_user is set")
    if delivery.connection_idle < 0:
        raise ConfigError("delivery.connection_idle: must be 0 (no reuse) or more")
    if config.queue.delay_warning < 0:
        raise ConfigError("queue.delay_warning: must be 0 (no warnings) or more")
    limits = ("max_connections", "max_connections_per_domain", "max_received", "max_messages_per_connection")
    for name in limits:
        if getattr(delivery, name) < 1:
            raise ConfigError(f"delivery.{name}: must be at least 1")
    for name in ("connect_timeout", "command_timeout"):
        if getattr(delivery, name) <= 0:
            raise ConfigError(f"delivery.{name}: must be greater than 0")
    for index, domain in enumerate(delivery.require_tls):
        if not domain or " " in domain or "@" in domain:
            raise ConfigError(f"delivery.require_tls[{index}]: {domain!r} is not a domain name")


_LISTENERS = ("smtp", "submission", "submissions")


def _validate_policy(config: Config) -> None:
    policy = config.policy
    for name in ("dnsbl_timeout", "dnsbl_cache", "proxy_timeout"):
        if getattr(policy, name) <= 0:
            raise ConfigError(f"policy.{name}: must be greater than 0")
    for key in ("dnsbl", "dnswl"):
        for index, zone in enumerate(getattr(policy, key)):
            if not zone or zone.startswith(".") or any(char in zone for char in " @/:["):
                raise ConfigError(f"policy.{key}[{index}]: {zone!r} is not a DNS zone name")
    for index, name in enumerate(policy.dnsbl_listeners):
        if name not in _LISTENERS:
            choices = ", ".join(_LISTENERS)
            raise ConfigError(f"policy.dnsbl_listeners[{index}]: {name!r} is not one of {choices}")
    for name in _LISTENERS:
        table = policy.listener(name)
        if table.greet_delay < 0:
            raise ConfigError(f"policy.{name}.greet_delay: must be 0 (off) or more")
        if table.proxy_protocol and not table.trusted_proxies:
            raise ConfigError(f"policy.{name}.trusted_proxies: proxy_protocol needs the proxies' networks")
    if policy.submissions.proxy_protocol:
        # The header would have to come before the TLS handshake, which the listener does for the session.
        raise ConfigError("policy.submissions.proxy_protocol: not supported with implicit TLS")
