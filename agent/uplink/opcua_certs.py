"""Certificates of the OPC UA server: its own (self-signed, made on first start) and the
trust list of client certificates.

The server certificate carries the server's application URI in its subjectAltName, as OPC UA
Part 6 requires, and is kept in the state directory so that clients which pinned it on first
contact keep trusting it after a restart. It is made again only if it is missing, unreadable,
expired, or names another application URI (the pole id changed).

The trust list is a directory of client certificates (DER or PEM, one per file). A client is
trusted when its exact certificate is in the directory (pinned by SHA-256 fingerprint); CA
chains are not evaluated. At each connection the directory is listed and re-read when any
file's name, size or modification time changed, so a certificate dropped in, replaced in
place (same name) or removed takes effect at the client's next connection, without a
restart. (The directory's own modification time is not enough: overwriting a file, or
writing it after creating it empty, as a copy does, leaves it unchanged.)

The certificate of an unknown client is kept in the rejected directory (``<name>-<first 16
hex of its fingerprint>.der``), so that a technician who has checked it moves that file into
the trusted directory. At most ``keep`` files are kept there, so clients that try many
certificates cannot fill the disk; what is not kept is counted.

All three directories (server certificate, trusted, rejected) are made at start with mode
0700: whoever can write the trusted directory decides who may connect.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import socket
import stat
from dataclasses import dataclass
from pathlib import Path

import structlog
from asyncua import ua
from asyncua.common.utils import ServiceError
from asyncua.ua.status_codes import StatusCodes
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

log = structlog.get_logger("smartpole.uplink.opcua")

CERT_NAME = "server_cert.der"
KEY_NAME = "server_key.pem"
VALID_DAYS = 3650
KEY_BITS = 2048


@dataclass(frozen=True)
class CertPair:
    certificate: Path
    private_key: Path


def make_self_signed(
    application_uri: str,
    common_name: str,
    *,
    hostnames: list[str] | None = None,
    valid_days: int = VALID_DAYS,
) -> tuple[bytes, bytes]:
    """Return ``(certificate DER, private key PEM)`` of a new self-signed application
    certificate whose subjectAltName names ``application_uri`` (and ``hostnames``)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    alt_names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(application_uri)]
    alt_names += [x509.DNSName(host) for host in hostnames or []]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=valid_days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=True,
                data_encipherment=True,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.DER), key_pem


def _usable(cert_path: Path, key_path: Path, application_uri: str) -> bool:
    try:
        cert = x509.load_der_x509_certificate(cert_path.read_bytes())
        serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except (OSError, ValueError, x509.ExtensionNotFound):
        return False
    uris = san.value.get_values_for_type(x509.UniformResourceIdentifier)
    return application_uri in uris and cert.not_valid_after_utc > dt.datetime.now(dt.UTC)


def ensure_server_certificate(directory: Path, application_uri: str, pole_id: str) -> CertPair:
    """Load the server's certificate from ``directory``, or make one on first start."""
    private_dir(directory)
    pair = CertPair(directory / CERT_NAME, directory / KEY_NAME)
    if pair.certificate.exists() and _usable(pair.certificate, pair.private_key, application_uri):
        return pair
    if pair.certificate.exists():
        log.warning("opcua_certificate_replaced", path=str(pair.certificate), uri=application_uri)
    cert_der, key_pem = make_self_signed(
        application_uri, f"smartpole {pole_id}", hostnames=[socket.gethostname()]
    )
    _write_private(pair.private_key, key_pem)
    tmp = pair.certificate.with_suffix(".tmp")
    tmp.write_bytes(cert_der)
    tmp.replace(pair.certificate)
    log.info("opcua_certificate_created", path=str(pair.certificate), uri=application_uri)
    return pair


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    tmp.replace(path)


def fingerprint(cert: x509.Certificate) -> str:
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _load_any(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


_Listing = tuple[tuple[str, int, int], ...]  # (name, size, mtime_ns) of each file
_SAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def private_dir(path: Path) -> Path:
    """Make ``path`` (and its parents) if missing, and leave it mode 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode != 0o700:
        try:
            path.chmod(0o700)
        except OSError as exc:
            log.warning("opcua_dir_mode_unfixable", path=str(path), mode=oct(mode), error=str(exc))
        else:
            log.warning("opcua_dir_mode_tightened", path=str(path), was=oct(mode))
    return path


class TrustList:
    """Client certificates pinned by fingerprint from one directory; callable as asyncua's
    certificate validator (raises ``ServiceError`` with the OPC UA status code)."""

    def __init__(self, directory: Path, rejected: Path | None = None, *, keep: int = 100) -> None:
        self.directory = directory
        self.rejected_dir = rejected
        self.keep = keep
        self._listing: _Listing | None = None
        self._pinned: frozenset[str] = frozenset()
        self.rejected = 0
        self.rejected_kept = 0
        self.rejected_not_kept = 0
        self._full = False

    def prepare(self) -> None:
        """At start: the trusted and rejected directories exist, mode 0700."""
        private_dir(self.directory)
        if self.rejected_dir is not None:
            private_dir(self.rejected_dir)

    def _list(self) -> _Listing | None:
        try:
            entries = []
            for path in self.directory.iterdir():
                info = path.stat()
                if stat.S_ISREG(info.st_mode):
                    entries.append((path.name, info.st_size, info.st_mtime_ns))
        except OSError:
            return None
        return tuple(sorted(entries))

    def _reload(self) -> None:
        listing = self._list()
        if listing is None:
            self._listing, self._pinned = None, frozenset()
            return
        if listing == self._listing:
            return
        pinned: set[str] = set()
        for name, _, _ in listing:
            path = self.directory / name
            try:
                pinned.add(fingerprint(_load_any(path.read_bytes())))
            except (OSError, ValueError):
                log.warning("opcua_trust_file_unreadable", path=str(path))
        self._listing, self._pinned = listing, frozenset(pinned)

    def is_trusted(self, cert: x509.Certificate | bytes | None) -> bool:
        if cert is None:
            return False
        if isinstance(cert, bytes):
            try:
                cert = x509.load_der_x509_certificate(cert)
            except ValueError:
                return False
        self._reload()
        return fingerprint(cert) in self._pinned

    async def __call__(self, cert: x509.Certificate, app: ua.ApplicationDescription) -> None:
        now = dt.datetime.now(dt.UTC)
        if not self.is_trusted(cert):
            self._reject("untrusted", cert, app, self._keep_rejected(cert))
            raise ServiceError(StatusCodes.BadCertificateUntrusted)
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            self._reject("expired", cert, app)
            raise ServiceError(StatusCodes.BadCertificateTimeInvalid)
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        except x509.ExtensionNotFound:
            san = None
        uris = [] if san is None else san.value.get_values_for_type(x509.UniformResourceIdentifier)
        if app.ApplicationUri not in uris:
            self._reject("uri_mismatch", cert, app)
            raise ServiceError(StatusCodes.BadCertificateUriInvalid)

    def _keep_rejected(self, cert: x509.Certificate) -> Path | None:
        """Keep an unknown client's certificate for a technician; where, or None."""
        if self.rejected_dir is None:
            return None
        names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        label = _SAFE_NAME.sub("_", str(names[0].value) if names else "").strip("._")[:40]
        path = self.rejected_dir / f"{label or 'client'}-{fingerprint(cert)[:16]}.der"
        if path.exists():
            return path
        try:
            kept = sum(1 for entry in self.rejected_dir.iterdir() if entry.suffix == ".der")
            if kept >= self.keep:
                self.rejected_not_kept += 1
                if not self._full:
                    self._full = True
                    log.warning("opcua_rejected_dir_full", path=str(self.rejected_dir),
                                keep=self.keep)  # fmt: skip
                return None
            _write_private(path, cert.public_bytes(serialization.Encoding.DER))
        except OSError as exc:
            self.rejected_not_kept += 1
            log.warning("opcua_rejected_not_kept", path=str(path), error=str(exc))
            return None
        if self._full:
            self._full = False
            log.info("opcua_rejected_dir_has_room", path=str(self.rejected_dir))
        self.rejected_kept += 1
        return path

    def _reject(
        self,
        why: str,
        cert: x509.Certificate,
        app: ua.ApplicationDescription,
        kept: Path | None = None,
    ) -> None:
        self.rejected += 1
        log.warning(
            "opcua_client_certificate_rejected",
            reason=why,
            fingerprint=fingerprint(cert),
            application_uri=app.ApplicationUri,
            kept_as=None if kept is None else str(kept),
        )
