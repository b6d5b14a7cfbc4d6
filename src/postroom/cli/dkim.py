"""`postroom dkim keygen|show`: make a domain's DKIM key and print the DNS TXT record that publishes it."""

from __future__ import annotations

import argparse
from typing import Any

from postroom.cli.errors import EX_USAGE, CliError
from postroom.config import Config
from postroom.delivery.dkim_keys import DkimKey, DkimKeyError, DkimKeys, zone_strings

__all__ = ["register"]


def register(commands: Any) -> None:
    parser = commands.add_parser("dkim", help="DKIM signing keys and the DNS records that publish them")
    actions = parser.add_subparsers(dest="dkim_command", metavar="ACTION", required=True)

    keygen = actions.add_parser("keygen", help="make a domain's signing key and print its DNS record")
    keygen.add_argument("domain", metavar="DOMAIN")
    keygen.add_argument("--selector", help="key selector (default: [dkim] selector)")
    keygen.add_argument(
        "--algorithm", choices=("rsa", "ed25519"), help="key type (default: [dkim] algorithm)"
    )
    keygen.add_argument("--bits", type=int, help="RSA key size (default: [dkim] rsa_bits)")
    keygen.add_argument("--force", action="store_true", help="replace an existing key")
    keygen.set_defaults(handler=run_keygen)

    show = actions.add_parser("show", help="print the DNS record of a domain's signing key again")
    show.add_argument("domain", metavar="DOMAIN")
    show.add_argument("--selector", help="key selector (default: [dkim] selector)")
    show.set_defaults(handler=run_show)


def _keys(config: Config) -> DkimKeys:
    return DkimKeys(config.dkim_dir, selector=config.dkim.selector)


def run_keygen(args: argparse.Namespace, config: Config) -> int:
    if args.bits is not None and (args.algorithm or config.dkim.algorithm) == "ed25519":
        raise CliError("--bits is for RSA keys; ed25519 keys have one size", EX_USAGE)
    try:
        key = _keys(config).generate(
            args.domain,
            args.selector,
            args.algorithm or config.dkim.algorithm,
            bits=args.bits or config.dkim.rsa_bits,
            force=args.force,
        )
    except DkimKeyError as exc:
        raise CliError(str(exc)) from None
    print(f"made an {_kind(key)} DKIM key for {key.domain} (selector {key.selector})")
    _print_record(key)
    return 0


def run_show(args: argparse.Namespace, config: Config) -> int:
    try:
        key = _keys(config).load(args.domain, args.selector)
    except DkimKeyError as exc:
        raise CliError(f"{exc}; `postroom dkim keygen {args.domain}` makes one") from None
    print(f"{_kind(key)} DKIM key for {key.domain} (selector {key.selector})")
    _print_record(key)
    return 0


def _kind(key: DkimKey) -> str:
    return "ed25519" if key.algorithm == "ed25519" else "RSA"


def _print_record(key: DkimKey) -> None:
    """The record as name and value, then as a zone-file line (value in 255-octet strings, RFC 1035)."""
    strings = " ".join(f'"{part}"' for part in zone_strings(key.record_value))
    print()
    print("Publish this DNS TXT record:")
    print(f"  name:  {key.record_name}")
    print(f"  value: {key.record_value}")
    print()
    print("In a zone file:")
    print(f"{key.record_name}. IN TXT ( {strings} )")
