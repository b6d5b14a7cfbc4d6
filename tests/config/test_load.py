"""Config loading: defaults, the sample file, and errors that name the key."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from postroom.cli.init import sample_config
from postroom.config import Config, ConfigError, load_config, parse_config
from postroom.config.schema import ListenAddress


def test_no_file_gives_the_embedded_defaults() -> None:
    config = load_config(None)
    assert config.smtp.listen == (ListenAddress("127.0.0.1", 2525),)
    assert config.submission.listen == (ListenAddress("127.0.0.1", 2587),)
    assert config.submissions.listen == (ListenAddress("127.0.0.1", 2465),)
    assert config.admin.listen == (ListenAddress("127.0.0.1", 8025),)
    assert config.local.domains == ("localhost",)
    assert config.data_dir == Path("postroom-data")
    assert config.smtp.relay_networks == ()


def test_sample_config_parses_to_the_defaults(tmp_path: Path) -> None:
    path = tmp_path / "postroom.toml"
    path.write_text(sample_config())
    config = load_config(path)
    assert config == Config(data_dir=tmp_path / "postroom-data")


def test_keys_the_test_setups_use() -> None:
    config = parse_config(
        {
            "hostname": "mx.example.test",
            "data_dir": "/tmp/x",
            "smtp": {
                "listen": ["127.0.0.2:0", "[::1]:2525"],
                "relay_networks": ["192.0.2.0/24", "2001:db8::/32"],
                "command_timeout": 2.5,
                "max_connections": 5,
                "max_connections_per_ip": 2,
            },
            "dns": {"nameservers": ["127.0.0.1:5353", "127.0.0.2"]},
            "delivery": {"smtp_port": 2526},
            "tls": {"cert_file": "c.pem", "key_file": "k.pem"},
            "local": {"domains": ["a.test"]},
            "admin": {"listen": "127.0.0.1:0"},
        }
    )
    assert config.smtp.listen == (ListenAddress("127.0.0.2", 0), ListenAddress("::1", 2525))
    assert config.smtp.relay_networks == (
        ipaddress.ip_network("192.0.2.0/24"),
        ipaddress.ip_network("2001:db8::/32"),
    )
    assert config.smtp.command_timeout == 2.5
    assert config.dns.nameservers == (("127.0.0.1", 5353), ("127.0.0.2", 53))
    assert config.delivery.smtp_port == 2526
    assert config.tls.cert_file == Path("c.pem")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"smtp": {"listen": "nowhere"}}, "smtp.listen: expected 'host:port'"),
        ({"smtp": {"listen": "127.0.0.1:70000"}}, "smtp.listen: port 70000 is out of range"),
        ({"smtp": {"lisen": "127.0.0.1:25"}}, "smtp.lisen: unknown key"),
        ({"smtp": {"max_errors": 0}}, "smtp.max_errors: must be at least 1"),
        ({"smtp": {"max_recipients": 10}}, "smtp.max_recipients: must be at least 100"),
        ({"smtp": {"command_timeout": "soon"}}, "smtp.command_timeout: expected a number"),
        ({"smtp": {"long_lines": "maybe"}}, "smtp.long_lines: expected one of"),
        ({"smtp": {"relay_networks": ["10.0.0.0/33"]}}, "smtp.relay_networks: '10.0.0.0/33' is not"),
        ({"smtp": 3}, "smtp: expected a table"),
        ({"local": {"domains": []}}, "local.domains: at least one"),
        ({"tls": {"cert_file": "c.pem"}}, "tls: cert_file and key_file must be given together"),
        ({"dns": {"nameservers": ["ns.example"]}}, "dns.nameservers: 'ns.example' is not an IP address"),
        ({"hostname": 5}, "hostname: expected a string"),
        ({"delivery": {"gather": 2}}, "delivery.gather: must be 0..1 seconds"),
        ({"delivery": {"gather": -0.1}}, "delivery.gather: must be 0..1 seconds"),
    ],
)
def test_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(".", r"\.")):
        parse_config(data)


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[smtp\nlisten=1")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_relative_data_dir_is_relative_to_the_file(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "postroom.toml"
    path.parent.mkdir()
    path.write_text('data_dir = "spool"\n')
    assert load_config(path).data_dir == tmp_path / "etc" / "spool"
