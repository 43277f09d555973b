"""A throwaway CA, the apiserver's serving certificate, client certificates and the service-account key (openssl)."""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from testground.process import ComponentError

_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign, digitalSignature
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = {sans}
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = clientAuth
"""

APISERVER_SANS = (
    "IP:127.0.0.1",
    "IP:10.96.0.1",
    "IP:10.247.0.1",  # with a real node the apiserver listens on the pod bridge's gateway (host.POD_GATEWAY)
    "DNS:localhost",
    "DNS:kubernetes",
    "DNS:kubernetes.default",
    "DNS:kubernetes.default.svc",
    "DNS:kubernetes.default.svc.cluster.local",
)


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: KeyPair
    apiserver: KeyPair
    service_account_key: Path
    service_account_pub: Path
    clients: dict[str, KeyPair]


def _openssl(*args: str | Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if result.returncode:
        raise ComponentError("pki", f"openssl {args[0]} failed: {result.stderr.strip()}")


def _issue(directory: Path, name: str, subject: str, extensions: str, config: Path, ca: KeyPair | None) -> KeyPair:
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    signer = ("-CA", ca.cert, "-CAkey", ca.key) if ca else ()
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", pair.key, "-out", pair.cert, "-days", "3650", "-subj", subject,
        "-config", config, "-extensions", extensions, *signer,
    )  # fmt: skip
    return pair


def generate(directory: Path, clients: dict[str, str]) -> Pki:
    """Issue everything into `directory`; `clients` maps a name to the certificate subject ("/O=group/CN=user")."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG.format(sans=", ".join(APISERVER_SANS)))
    ca = _issue(directory, "ca", "/CN=voicefleet-testground-ca", "ca", config, None)
    apiserver = _issue(directory, "apiserver", "/CN=kube-apiserver", "server", config, ca)
    issued = {name: _issue(directory, name, subject, "client", config, ca) for name, subject in clients.items()}
    sa_key, sa_pub = directory / "sa.key", directory / "sa.pub"
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", sa_key)
    _openssl("pkey", "-in", sa_key, "-pubout", "-out", sa_pub)
    for key in directory.glob("*.key"):
        key.chmod(0o600)
    return Pki(ca, apiserver, sa_key, sa_pub, issued)


def issue(
    directory: Path, ca: KeyPair, certs: Mapping[str, tuple[str, str]], sans: Sequence[str] = ()
) -> dict[str, KeyPair]:
    """Issue certificates signed by `ca` into `directory`: name -> (subject, "client" or "server" with `sans`)."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG.format(sans=", ".join(sans) or "DNS:localhost"))
    issued = {name: _issue(directory, name, subject, kind, config, ca) for name, (subject, kind) in certs.items()}
    for pair in issued.values():
        pair.key.chmod(0o600)
    return issued
