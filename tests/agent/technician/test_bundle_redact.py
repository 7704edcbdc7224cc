"""The support bundle's two defences against secrets, each on its own.

Structural redaction (``redact``) must take a secret out of any config tree that holds it
under a secret-like key and out of any URL's user information, whatever the secret is; the
safety net (``secret_scan``) must find a secret value it was told of in any bytes, as
written, base64 or hex, and the values it is told of must be those the config leads to.
"""

from __future__ import annotations

import base64
import string
from pathlib import Path

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given
from hypothesis import strategies as st

from smartpole.agent.technician.redact import MARK, redact_text, redact_tree
from smartpole.agent.technician.secret_scan import KnownSecrets, known_secrets

# What a password in a URL may hold unescaped (RFC 3986 userinfo, '@' and ':' included
# by careless hands); '/' and white space end the authority, so a URL cannot hold them.
USERINFO_CHARS = string.ascii_letters + string.digits + "-._~!$&()*+,;=%:@"
# "Z9" appears in no key or other value of the trees below, so a find is the secret's.
secret_text = st.text(alphabet=string.ascii_letters + string.digits + "-_+=!", min_size=6).map(
    lambda text: "Z9" + text
)
noise = st.text(alphabet=string.printable, max_size=40)
secret_key = st.sampled_from(
    ["password", "mqtt_password", "api_token", "secret", "hmac_key", "Credentials", "passwd"]
)
plain_key = st.text(alphabet="abcdefhijlmnoqruvwxz_", min_size=1, max_size=12)


def forms(secret: bytes) -> list[bytes]:
    return [
        secret,
        base64.b64encode(secret).rstrip(b"="),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
        secret.hex().encode(),
        secret.hex().upper().encode(),
    ]


@given(
    password=st.text(alphabet=USERINFO_CHARS, min_size=4),
    user=st.text(alphabet=string.ascii_letters, min_size=1, max_size=10),
    scheme=st.sampled_from(["rtsp", "mqtts", "https", "opc.tcp"]),
    before=noise,
    after=noise,
)
def test_no_password_of_a_url_survives_in_text(
    password: str, user: str, scheme: str, before: str, after: str
) -> None:
    url = f"{scheme}://{user}:{password}@192.0.2.7:554/stream"
    out = redact_text(f"{before} {url} {after}")
    assert f"{scheme}://{MARK}@192.0.2.7:554/stream" in out
    assert f":{password}@" not in out


@given(
    secret=secret_text,
    path=st.lists(st.one_of(plain_key, st.integers(0, 3)), max_size=4),
    key=secret_key,
)
def test_a_secret_under_a_secret_like_key_leaves_no_trace_in_the_tree(
    secret: str, path: list[str | int], key: str
) -> None:
    tree: object = {key: secret, "host": "broker.example", "key_file": "secrets/tls.key"}
    for step in reversed(path):
        tree = [tree] if isinstance(step, int) else {step: tree, "neighbour": 1}
    out = yaml.safe_dump(redact_tree(tree))
    assert secret not in out
    assert "secrets/tls.key" in out  # names of files stay
    assert "broker.example" in out


@given(secret=st.binary(min_size=4, max_size=64), before=st.binary(), after=st.binary())
def test_the_safety_net_removes_every_form_of_a_known_secret(
    secret: bytes, before: bytes, after: bytes
) -> None:
    known = KnownSecrets()
    known.add(secret)
    if len(secret.strip()) < 4:
        return
    for form in forms(secret.strip()):
        data, hits, left = known.scrub(before + form + after)
        assert hits >= 1
        assert left or not any(f in data for f in forms(secret.strip()))


def test_the_safety_net_withholds_what_it_cannot_clean() -> None:
    known = KnownSecrets()
    known.add(b"REDACTED")  # part of the mark itself
    _, _, left = known.scrub(b"password REDACTED")
    assert left


def test_the_values_searched_are_those_the_config_leads_to(tmp_path: Path) -> None:
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "swept").write_bytes(b"only-in-the-secrets-folder\n")
    (tmp_path / "mqtt-password").write_bytes(b"named-password-file\n")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    der = key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    (tmp_path / "client.key").write_bytes(pem)
    (tmp_path / "a-folder").mkdir()
    pki = tmp_path / "state" / "opcua" / "pki"
    pki.mkdir(parents=True)
    (pki / "server_key.pem").write_bytes(b"opcua-server-private-key\n")
    (tmp_path / "state" / "opcua" / "users").write_bytes(b"operator:pbkdf2-hash-value\n")
    tree = {
        "uplink": {
            "password_file": "mqtt-password",
            "tls": {"key_file": str(tmp_path / "client.key"), "cert_file": "public.pem"},
            "commands": {"hmac_key_file": "a-folder", "previous_hmac_key_file": "gone.key"},
        },
        "cameras": {"street": {"source": "rtsp://viewer:cam-pass-77@192.0.2.1/s"}},
        "token": "inline-token-value",
        "opcua": {"endpoint": "opc.tcp://0.0.0.0:4840/"},  # its files where they are by default
    }
    known = known_secrets(tree, tmp_path, tmp_path / "state")
    text = b" ".join(
        [
            b"only-in-the-secrets-folder",
            b"named-password-file",
            der.hex().encode(),
            base64.b64encode(der),
            b"cam-pass-77",
            b"inline-token-value",
            b"opcua-server-private-key",
            b"operator:pbkdf2-hash-value",
        ]
    )
    data, hits, left = known.scrub(text)
    assert hits == 8
    assert not left
    assert data == b" ".join([MARK.encode()] * 8)
    # A file that cannot be read is said so; a missing previous key is not a problem.
    assert [u["file"] for u in known.unread] == [str(tmp_path / "a-folder")]
