"""One CA for the whole gateway fleet, kept in Secrets Manager.

mitmproxy signs the certificates it shows clients with the CA in its confdir, and makes a new CA
when there is none, so each task of a fleet had its own and clients could not trust the fleet.
`jitgate ca init` makes the CA once and stores it (key and certificate, mitmproxy's
`mitmproxy-ca.pem` form) as a secret; `jitgate gateway --ca-secret` writes it into the confdir
before mitmdump starts, so every task signs with the same CA. The key never leaves the secret and
the confdir (0600); clients get the certificate alone (`--cert-out`).
"""

from __future__ import annotations

import datetime
import hashlib
import os
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from jitgate.errors import CaInvalid, CaUnavailable

BASENAME = "mitmproxy"  # mitmproxy's file names in its confdir
VALID_DAYS = 5 * 365
# Files mitmproxy derives from a CA it made itself: dropped so no stale copy of another CA stays.
_DERIVED = (f"{BASENAME}-ca.p12", f"{BASENAME}-ca-cert.cer", f"{BASENAME}-ca-cert.p12")


def new_ca(common_name: str = "jitgate gateway CA") -> str:
    """A new CA as mitmproxy stores it: the private key (PEM) followed by the certificate (PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, "jitgate")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=2))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    return (key_pem + cert.public_bytes(serialization.Encoding.PEM)).decode()


def certificate_pem(ca_pem: str) -> str:
    """The certificate of `ca_pem` alone (what clients trust), after checking key and certificate."""
    return _parse(ca_pem)[1].public_bytes(serialization.Encoding.PEM).decode()


def fingerprint(cert_pem: str | bytes) -> str:
    """SHA-256 of the (first) certificate's DER, hex: the same CA gives the same fingerprint."""
    data = cert_pem.encode() if isinstance(cert_pem, str) else cert_pem
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        raise CaInvalid("not a PEM certificate") from None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _parse(ca_pem: str) -> tuple[Any, x509.Certificate]:
    data = ca_pem.encode()
    try:
        key = serialization.load_pem_private_key(data, password=None)
        cert = x509.load_pem_x509_certificate(data[data.index(b"-----BEGIN CERTIFICATE-----"):])
    except ValueError:
        # The text only says what is missing; never a piece of the key.
        raise CaInvalid("the CA must be a PEM private key followed by its PEM certificate") from None
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        ca = False
    if not ca:
        raise CaInvalid("the certificate is not a CA certificate")
    pub = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.DER, pub) != cert.public_key().public_bytes(
        serialization.Encoding.DER, pub
    ):
        raise CaInvalid("the private key is not the certificate's")
    return key, cert


def install(confdir: Path, ca_pem: str) -> str:
    """Write `ca_pem` into mitmproxy's `confdir` (key 0600); returns the certificate's fingerprint."""
    cert = certificate_pem(ca_pem)
    confdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    for name in _DERIVED:
        (confdir / name).unlink(missing_ok=True)
    key_file = confdir / f"{BASENAME}-ca.pem"
    tmp = key_file.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(ca_pem)
    os.replace(tmp, key_file)
    (confdir / f"{BASENAME}-ca-cert.pem").write_text(cert)
    return fingerprint(cert)


def load_secret(secretsmanager: Any, secret_id: str) -> str:
    """The CA stored under `secret_id`; CaUnavailable when it cannot be read (the type only)."""
    try:
        value = secretsmanager.get_secret_value(SecretId=secret_id).get("SecretString")
    except Exception as exc:
        raise CaUnavailable(f"gateway CA secret {secret_id} not readable ({type(exc).__name__})") from None
    if not isinstance(value, str) or not value:
        raise CaInvalid(f"gateway CA secret {secret_id} holds no text")
    return value


def store_secret(secretsmanager: Any, secret_id: str, ca_pem: str, *, rotate: bool) -> str:
    """Store `ca_pem` as `secret_id` (a new secret, or with `rotate` a new version); its ARN."""
    try:
        if rotate:
            answer = secretsmanager.put_secret_value(SecretId=secret_id, SecretString=ca_pem)
        else:
            answer = secretsmanager.create_secret(
                Name=secret_id, SecretString=ca_pem, Description="jitgate gateway CA (private key and certificate)"
            )
    except Exception as exc:
        raise CaUnavailable(f"gateway CA secret {secret_id} not stored ({type(exc).__name__})") from None
    return str(answer["ARN"])
