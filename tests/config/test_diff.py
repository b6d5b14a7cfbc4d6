"""config/diff.py: the dotted keys that differ between two Configs, and which of them are taken live."""

from __future__ import annotations

from pathlib import Path

from postroom.config import Config, parse_config
from postroom.config.diff import adopt, changed_keys, compare


def _config(**sections: object) -> Config:
    return parse_config({"data_dir": "/srv/postroom", **sections})


def test_the_same_config_changes_nothing() -> None:
    assert changed_keys(_config(), _config()) == ()
    change = compare(_config(), _config(), live=("smtp", "policy"))
    assert change.live == change.restart == ()
    assert change.config == _config()


def test_changed_keys_are_dotted_and_in_field_order() -> None:
    old = _config(smtp={"max_message_size": 1000})
    new = _config(hostname="mx.example.test", smtp={"max_message_size": 500, "listen": "127.0.0.1:25"})
    assert changed_keys(old, new) == ("hostname", "smtp.listen", "smtp.max_message_size")


def test_tables_inside_tables_are_followed_down() -> None:
    old = _config(policy={"deny": ["192.0.2.0/24"]})
    new = _config(policy={"deny": ["192.0.2.0/24"], "smtp": {"greet_delay": 2}})
    assert changed_keys(old, new) == ("policy.smtp.greet_delay",)


def test_a_tuple_value_is_one_key_whatever_changed_inside_it() -> None:
    old = _config(local={"domains": ["a.test"]})
    new = _config(local={"domains": ["a.test", "b.test"]})
    assert changed_keys(old, new) == ("local.domains",)


def test_compare_splits_live_keys_from_restart_keys() -> None:
    old = _config()
    new = _config(
        smtp={"listen": "127.0.0.1:25", "max_message_size": 500},
        limits={"recipients_per_hour": 10},
        admin={"listen": []},
    )
    change = compare(old, new, live=("smtp.max_message_size", "limits"))
    assert change.live == ("smtp.max_message_size", "limits.recipients_per_hour")
    assert change.restart == ("smtp.listen", "admin.listen")


def test_the_config_in_effect_takes_only_the_live_keys() -> None:
    old = _config()
    new = _config(
        smtp={"listen": "127.0.0.1:25", "max_message_size": 500}, policy={"smtp": {"greet_delay": 3}}
    )
    change = compare(old, new, live=("smtp.max_message_size", "policy"))
    assert change.config.smtp.max_message_size == 500
    assert change.config.policy.smtp.greet_delay == 3
    assert change.config.smtp.listen == old.smtp.listen
    assert change.config.data_dir == Path("/srv/postroom")


def test_a_live_entry_is_a_whole_key_not_a_prefix_of_a_name() -> None:
    old, new = _config(), _config(smtp={"max_errors": 3})
    assert compare(old, new, live=("smtp.max",)).restart == ("smtp.max_errors",)


def test_adopt_leaves_both_inputs_as_they_were() -> None:
    old, new = _config(), _config(greylist={"enabled": True, "delay": 60})
    merged = adopt(old, new, ["greylist.enabled"])
    assert merged.greylist.enabled is True
    assert merged.greylist.delay == old.greylist.delay
    assert old.greylist.enabled is False
    assert new.greylist.delay == 60


def test_the_running_server_takes_queue_and_delivery_timing_live_but_not_where_mail_goes() -> None:
    from postroom.app import LIVE_CONFIG_KEYS

    old = _config()
    new = _config(
        queue={"retry_schedule": [60, 120], "max_lifetime": 3600, "delay_warning": 0, "claim_lease": 30,
               "commit_max_batch": 8},
        delivery={"poll_interval": 1, "connect_timeout": 5, "command_timeout": 60, "max_received": 20,
                  "require_tls": ["bank.test"], "concurrency": 2, "max_connections": 4,
                  "max_connections_per_domain": 1, "smtp_port": 2525, "relay_host": "relay.test:587"},
        dkim={"selector": "s2"},
        dns={"timeout": 9},
    )  # fmt: skip
    change = compare(old, new, live=LIVE_CONFIG_KEYS)
    assert change.live == (
        "queue.retry_schedule", "queue.max_lifetime", "queue.claim_lease", "queue.delay_warning",
        "delivery.concurrency", "delivery.poll_interval", "delivery.max_connections",
        "delivery.max_connections_per_domain", "delivery.connect_timeout", "delivery.command_timeout",
        "delivery.max_received", "delivery.require_tls",
    )  # fmt: skip
    assert change.restart == (
        "dns.timeout", "queue.commit_max_batch", "delivery.smtp_port", "delivery.relay_host", "dkim.selector"
    )
    assert change.config.queue.retry_schedule == (60.0, 120.0)
    assert change.config.queue.commit_max_batch == old.queue.commit_max_batch
    assert change.config.delivery.require_tls == ("bank.test",)
    assert change.config.delivery.smtp_port == old.delivery.smtp_port
