"""The [dkim] section: its defaults, and refusals that name the key."""

from __future__ import annotations

import re
from typing import Any

import pytest

from postroom.config import ConfigError, parse_config
from postroom.config.schema import DkimSettings


def test_defaults_sign_with_the_postroom_selector_relaxed_and_oversign_from() -> None:
    dkim = parse_config({}).dkim
    assert dkim == DkimSettings()
    assert (dkim.sign, dkim.selector, dkim.algorithm, dkim.rsa_bits) == (True, "postroom", "rsa", 2048)
    assert dkim.canonicalization == "relaxed/relaxed"
    assert "from" in dkim.headers
    assert dkim.oversign == ("from",)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"selector": "bad selector"}, "dkim.selector: 'bad selector' is not a DNS label"),
        ({"rsa_bits": 512}, "dkim.rsa_bits: must be 1024..8192"),
        ({"headers": ["subject", "to"]}, "dkim.headers: must include 'from'"),
        ({"headers": ["from", "Received"]}, "dkim.headers[1]: 'Received' changes in transit"),
        ({"oversign": ["from", "bad:name"]}, "dkim.oversign[1]: 'bad:name' is not a header field name"),
        ({"algorithm": "dsa"}, "dkim.algorithm: expected one of 'rsa', 'ed25519'"),
        ({"canonicalization": "relaxed"}, "dkim.canonicalization: expected one of"),
    ],
)
def test_bad_values_name_the_key(section: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        parse_config({"dkim": section})
