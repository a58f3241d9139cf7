"""Test certificates, made at run time: a CA, a server certificate and a client certificate.

Built with `cryptography`, which pyOpenSSL installs (pyOpenSSL itself no
longer makes certificate extensions such as subjectAltName). No key
material is kept in the repository. `python test/certs.py DIR` writes them
to DIR, for the Autobahn run and for trying wss:// by hand.
"""

from __future__ import annotations

import datetime
import ipaddress
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class Certs:
    """Paths of the PEM files `make_certs` writes."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path  # a CA that signed none of these


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
           issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
           names: list[x509.GeneralName] | None = None,
           usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(subject)).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(days=1))
               .not_valid_after(now + datetime.timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        builder = builder.add_extension(
            x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False)
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey | None = None) -> None:
    data = cert.public_bytes(serialization.Encoding.PEM)
    path.write_bytes(data)
    if key is not None:
        path.with_suffix('.key').write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))


def make_certs(directory: Path, names: tuple[str, ...] = ()) -> Certs:
    """Write a test CA, a server certificate (localhost, 127.0.0.1, ::1, and the host `names`)
    and a client one."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _issue('wspy test CA', ca_key, _name('wspy test CA'), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _issue('localhost', server_key, ca.subject, ca_key, names=[
        x509.DNSName('localhost'), *map(x509.DNSName, names),
        x509.IPAddress(ipaddress.ip_address('127.0.0.1')),
        x509.IPAddress(ipaddress.ip_address('::1'))], usage=ExtendedKeyUsageOID.SERVER_AUTH)
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _issue('wspy test client', client_key, ca.subject, ca_key,
                    usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    other_key = ec.generate_private_key(ec.SECP256R1())
    other = _issue('another CA', other_key, _name('another CA'), other_key, ca=True)
    certs = Certs(directory / 'ca.pem', directory / 'server.pem', directory / 'server.key',
                  directory / 'client.pem', directory / 'client.key', directory / 'other-ca.pem')
    _write(certs.ca, ca)
    _write(certs.server_cert, server, server_key)
    _write(certs.client_cert, client, client_key)
    _write(certs.other_ca, other)
    return certs


if __name__ == '__main__':
    made = make_certs(Path(sys.argv[1] if len(sys.argv) > 1 else 'certs'))
    print(made.server_cert, made.server_key, made.ca)
