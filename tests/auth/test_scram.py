"""SCRAM-SHA-256 (RFC 7677 on RFC 5802): stored secrets and the server side of the exchange, pure; then the
Authenticator that feeds it stored secrets and puts its verdict through the login throttle."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from scramp import ScramClient

from postroom.auth.accounts import Accounts
from postroom.auth.authenticator import Authenticator, LoginThrottled
from postroom.auth.sasl import Acknowledgement, Challenge, Malformed, ScramProof, Unsupported, Verified
from postroom.auth.scram import ScramExchange, ScramSecrets, make_secrets, mock_secrets
from postroom.auth.throttle import LoginThrottle, ThrottleSettings
from postroom.store import open_database

# RFC 7677 section 3: user "user", password "pencil".
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_NONCE = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_SERVER_FIRST = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
RFC_CLIENT_FINAL = (
    "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
)
RFC_SERVER_FINAL = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
MOCK_KEY = b"k" * 32


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def unb64(text: str) -> str:
    return base64.b64decode(text).decode()


def rfc_secrets() -> ScramSecrets:
    secrets = make_secrets("pencil", iterations=4096, salt=RFC_SALT)
    assert secrets is not None
    return secrets


def exchange(
    users: dict[str, ScramSecrets] | None = None, server_nonce: str | None = RFC_SERVER_NONCE
) -> tuple[ScramExchange, list[str]]:
    """An exchange over ``users`` (default: RFC 7677's), and the names it looked up."""
    looked_up: list[str] = []
    known = {"user": rfc_secrets()} if users is None else users

    def lookup(username: str) -> ScramSecrets | None:
        looked_up.append(username)
        return known.get(username)

    return ScramExchange(lookup=lookup, mock_key=MOCK_KEY, mock_iterations=4096, server_nonce=server_nonce), (
        looked_up
    )


def test_rfc7677_example_exchange() -> None:
    scram, looked_up = exchange()
    assert scram.first_challenge() == Challenge("")
    first = scram.step(b64(RFC_CLIENT_FIRST))
    assert isinstance(first, Challenge)
    assert unb64(first.text) == RFC_SERVER_FIRST
    assert looked_up == ["user"]
    proof = scram.step(b64(RFC_CLIENT_FINAL))
    assert isinstance(proof, ScramProof)
    assert proof.username == "user"
    assert proof.valid
    assert unb64(proof.server_final) == RFC_SERVER_FINAL
    assert "6rriTRBi" not in repr(proof)


def test_rfc7677_secrets_encode_in_rfc5803_form_and_back() -> None:
    secrets = rfc_secrets()
    text = secrets.encode()
    assert text.startswith("SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$")
    assert ScramSecrets.decode(text) == secrets
    assert "pencil" not in text
    assert "keys=<hidden>" in repr(secrets)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "SCRAM-SHA-1$4096:c2FsdA==$a:b",
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==",
        "SCRAM-SHA-256$ten:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",
        "SCRAM-SHA-256$1000:W22ZaJ0SNY7soEsUEjb6gQ==$" + "A" * 44 + ":" + "A" * 44,  # below 4096
        "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$AAAA:AAAA",  # keys not 32 bytes
        "SCRAM-SHA-256$4096:***$" + "A" * 44 + ":" + "A" * 44,
    ],
)
def test_malformed_stored_secrets_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="SCRAM-SHA-256"):
        ScramSecrets.decode(text)


def test_make_secrets_bounds_and_saslprep() -> None:
    with pytest.raises(ValueError, match="iterations"):
        make_secrets("pencil", iterations=4095)
    assert make_secrets("bell\u0007", iterations=4096) is None  # SASLprep forbids control characters
    first, second = make_secrets("pencil", iterations=4096), make_secrets("pencil", iterations=4096)
    assert first is not None
    assert second is not None
    assert first.salt != second.salt  # a fresh salt each time
    assert len(first.salt) == 32
    # RFC 4013: non-ASCII spaces map to a space, so either spelling gives the same keys
    spaced = make_secrets("pen\u00a0cil", iterations=4096, salt=RFC_SALT)
    assert spaced == make_secrets("pen cil", iterations=4096, salt=RFC_SALT)


def test_wrong_password_is_an_invalid_proof_without_a_server_signature() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "user", "not pencil")
    scram, _ = exchange(server_nonce=None)
    first = scram.step(b64(client.get_client_first()))
    assert isinstance(first, Challenge)
    client.set_server_first(unb64(first.text))
    proof = scram.step(b64(client.get_client_final()))
    assert proof == ScramProof("user", valid=False)
    assert proof.server_final == ""


def test_a_real_client_logs_in_and_checks_the_server_signature() -> None:
    client = ScramClient(["SCRAM-SHA-256"], "user", "pencil")
    scram, _ = exchange(server_nonce=None)
    first = scram.step(b64(client.get_client_first()))
    assert isinstance(first, Challenge)
    client.set_server_first(unb64(first.text))
    proof = scram.step(b64(client.get_client_final()))
    assert isinstance(proof, ScramProof)
    assert proof.valid
    client.set_server_final(unb64(proof.server_final))  # raises if the signature were wrong
    assert scram.step("") == Malformed("SCRAM exchange already finished")


def test_unknown_user_gets_a_steady_made_up_salt_and_never_a_valid_proof() -> None:
    salts = []
    for name in ("nobody", "nobody", "somebody"):
        client = ScramClient(["SCRAM-SHA-256"], name, "pencil")
        scram, _ = exchange(server_nonce=None)
        first = scram.step(b64(client.get_client_first()))
        assert isinstance(first, Challenge)
        server_first = unb64(first.text)
        salts.append(server_first.split(",")[1])
        assert server_first.endswith(",i=4096")
        client.set_server_first(server_first)
        assert scram.step(b64(client.get_client_final())) == ScramProof(name, valid=False)
    assert salts[0] == salts[1] != salts[2]
    made_up = mock_secrets("nobody", key=MOCK_KEY, iterations=4096)
    assert salts[0] == "s=" + base64.b64encode(made_up.salt).decode()
    assert len(made_up.salt) == len(rfc_secrets().salt) * 2  # 32 bytes, like make_secrets' own salts


def test_escaped_username_is_unescaped_before_the_lookup() -> None:
    scram, looked_up = exchange()
    assert isinstance(scram.step(b64("n,,n=a=2Cb=3Dc@example.test,r=abc")), Challenge)
    assert looked_up == ["a,b=c@example.test"]


def test_client_that_does_not_know_we_lack_binding_is_served() -> None:
    scram, _ = exchange()
    assert isinstance(scram.step(b64("y,,n=user,r=abc")), Challenge)  # RFC 5802 6: "y" is fine without -PLUS


def test_client_demanding_channel_binding_is_refused() -> None:
    scram, looked_up = exchange()
    step = scram.step(b64("p=tls-server-end-point,,n=user,r=abc"))
    assert isinstance(step, Unsupported)
    assert "channel binding" in step.reason
    assert looked_up == []


@pytest.mark.parametrize(
    "client_first",
    [
        "n=user,r=abc",  # no gs2 header
        "x,,n=user,r=abc",  # unknown gs2 flag
        "n,,r=abc",  # no username
        "n,,n=,r=abc",  # empty username
        "n,,n=us=2Xer,r=abc",  # "=" must be =2C or =3D
        "n,,n=user",  # no nonce
        "n,,n=user,r=a,b",  # a comma in the nonce
        "n,,m=ext,n=user,r=abc",  # a mandatory extension
        "n,,n=user,r=ab\u00e9",  # the nonce must be printable ASCII
        "n,a=admin,n=user,r=abc",  # an authzid (not supported: it must be empty)
    ],
)
def test_malformed_client_first_is_malformed(client_first: str) -> None:
    scram, _ = exchange()
    assert isinstance(scram.step(b64(client_first)), Malformed)


@pytest.mark.parametrize("response", ["not base64!", "////", base64.b64encode(b"\xff\xfe").decode()])
def test_undecodable_responses_are_malformed(response: str) -> None:
    scram, _ = exchange()
    assert scram.step(response) == Malformed("SCRAM response is not base64 UTF-8")
    scram, _ = exchange()
    assert isinstance(scram.step(b64(RFC_CLIENT_FIRST)), Challenge)
    assert scram.step(response) == Malformed("SCRAM response is not base64 UTF-8")


@pytest.mark.parametrize(
    "client_final",
    [
        "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",  # no server nonce
        "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA",  # "y,," in c= after "n,,"
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",  # no proof
        "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=***",  # proof not base64
        "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,c=biws,p=AAAA",  # out of order
    ],
)
def test_malformed_client_final_is_not_a_proof(client_final: str) -> None:
    scram, _ = exchange()
    assert isinstance(scram.step(b64(RFC_CLIENT_FIRST)), Challenge)
    assert isinstance(scram.step(b64(client_final)), Malformed)


def test_short_proof_is_an_invalid_proof() -> None:
    scram, _ = exchange()
    assert isinstance(scram.step(b64(RFC_CLIENT_FIRST)), Challenge)
    final = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=AAAA"
    assert scram.step(b64(final)) == ScramProof("user", valid=False)


def test_failing_lookup_is_not_blamed_on_the_client() -> None:
    def lookup(username: str) -> ScramSecrets | None:
        raise OSError("disk gone")

    scram = ScramExchange(lookup=lookup, mock_key=MOCK_KEY, mock_iterations=4096)
    with pytest.raises(OSError, match="disk gone"):
        scram.step(b64(RFC_CLIENT_FIRST))


def test_acknowledgement_wants_an_empty_response() -> None:
    assert Acknowledgement("alice@example.test").step("") == Verified("alice@example.test")
    assert isinstance(Acknowledgement("alice@example.test").step("Zm9v"), Malformed)


# --- the Authenticator: stored secrets in, verdicts through the throttle ------------------------------------


@pytest.fixture
def authenticator(tmp_path: Path) -> Iterator[Authenticator]:
    db = open_database(tmp_path / "postroom.db")
    accounts = Accounts(db=db, domains=["example.test"])
    scram = rfc_secrets().encode()
    accounts.add_mailbox("alice@example.test", password_hash="$argon2id$unused", scram=scram)
    accounts.add_mailbox("old@example.test", password_hash="$argon2id$unused")  # before SCRAM secrets
    throttle = LoginThrottle(
        db=db, settings=ThrottleSettings(free_failures=1, max_delay=0.0, lockout_failures=2, window=60.0)
    )
    authenticator = Authenticator(accounts=accounts, throttle=throttle, clock=lambda: 1000.0)
    yield authenticator
    authenticator.close()
    db.close()


def _login(authenticator: Authenticator, username: str, password: str) -> ScramProof:
    client = ScramClient(["SCRAM-SHA-256"], username, password)
    scram, first = authenticator.start_exchange("scram-sha-256", b64(client.get_client_first()))
    assert isinstance(first, Challenge)
    client.set_server_first(unb64(first.text))
    proof = scram.step(b64(client.get_client_final()))
    assert isinstance(proof, ScramProof)
    return proof


async def test_authenticator_checks_stored_secrets_and_counts_failures(authenticator: Authenticator) -> None:
    good = _login(authenticator, "Alice@Example.TEST", "pencil")
    assert good.valid
    assert await authenticator.check(good, ip="192.0.2.1") == "alice@example.test"
    old = _login(authenticator, "old@example.test", "pencil")  # a mailbox without SCRAM secrets
    assert not old.valid
    assert await authenticator.check(old, ip="192.0.2.9") is None
    for _ in range(2):
        bad = _login(authenticator, "alice@example.test", "not pencil")
        assert await authenticator.check(bad, ip="192.0.2.1") is None
    # locked out: even the right proof is refused, before the client could see the server's signature
    with pytest.raises(LoginThrottled):
        await authenticator.check(_login(authenticator, "alice@example.test", "pencil"), ip="192.0.2.1")


def test_authenticator_starts_scram_without_initial_response(authenticator: Authenticator) -> None:
    _, step = authenticator.start_exchange("SCRAM-SHA-256", None)
    assert step == Challenge("")
    _, plain = authenticator.start_exchange("PLAIN", None)
    assert plain == Challenge("")
