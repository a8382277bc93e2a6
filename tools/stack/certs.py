"""Workload certificates from Vault PKI, written where Envoy and the services watch for them.

Each identity has a directory `<dir>/current -> vN/` holding `cert.pem` (leaf + intermediate),
`key.pem` (0600) and `ca.pem` (the mesh root). A renewal is a new `vN+1/` and an atomic
rename of the `current` symlink, which Envoy (SDS `watched_directory`) and the services
(`services.runtime.tls.CertificateFiles`) both pick up without a restart. `Renewer` renews
every certificate at two thirds of its life, the way cert-manager or a Vault agent would in
Kubernetes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hvac

from services.runtime import vault
from services.runtime.logging import get_logger
from services.runtime.tls import spiffe_id

log = get_logger(__name__)

DEFAULT_TTL = 24 * 3600
KEEP_VERSIONS = 3  # old versions stay a little, for connections handshaking during a swap


@dataclass(frozen=True)
class Identity:
    """Who a certificate is for: a name for its directory, its SPIFFE ID and its DNS/IP names."""

    name: str
    spiffe_id: str
    dns_names: tuple[str, ...] = ()
    ip_sans: tuple[str, ...] = ()

    @classmethod
    def workload(cls, namespace: str, service: str, *, local: bool = True) -> Identity:
        dns = (f"{service}.devmesh.local", "localhost") if local else ()
        return cls(service, spiffe_id(namespace, service), dns, ("127.0.0.1",) if local else ())


@dataclass(frozen=True)
class CertPaths:
    cert: Path
    key: Path
    ca: Path


@dataclass
class CertDir:
    """The on-disk home of one identity's certificate."""

    root: Path
    version: int = 0
    expires_at: float = 0.0
    issued_at: float = 0.0
    serial: str = ""

    @property
    def current(self) -> CertPaths:
        base = self.root / "current"
        return CertPaths(base / "cert.pem", base / "key.pem", base / "ca.pem")

    def install(self, cert_chain: str, key: str, ca: str) -> None:
        """Write a new version and swap `current` to it atomically."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.version == 0:  # a restarted stack goes on after its last version, and prunes it
            self.version = max(
                (int(d.name[1:]) for d in self.root.glob("v*") if d.name[1:].isdigit()), default=0
            )
        self.version += 1
        target = self.root / f"v{self.version}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(mode=0o700)
        for name, content in (("cert.pem", cert_chain), ("key.pem", key), ("ca.pem", ca)):
            fd = os.open(target / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(content)
        staging = self.root / "current.new"
        with contextlib.suppress(FileNotFoundError):
            staging.unlink()
        staging.symlink_to(target.name)
        os.replace(staging, self.root / "current")
        stale = self.root / f"v{self.version - KEEP_VERSIONS}"
        shutil.rmtree(stale, ignore_errors=True)


def issue(
    client: hvac.Client, identity: Identity, ttl_seconds: int, ca_pem: str
) -> tuple[str, str, dict[str, Any]]:
    """A fresh key and certificate for `identity`; returns (chain PEM, key PEM, Vault's data)."""
    extra: dict[str, object] = {"uri_sans": identity.spiffe_id, "ttl": f"{ttl_seconds}s"}
    if identity.dns_names[1:]:
        extra["alt_names"] = ",".join(identity.dns_names[1:])
    if identity.ip_sans:
        extra["ip_sans"] = ",".join(identity.ip_sans)
    data = client.secrets.pki.generate_certificate(
        vault.PKI_ROLE,
        identity.dns_names[0] if identity.dns_names else "",
        extra_params=extra,
        mount_point=vault.PKI_MOUNT,
    )["data"]
    # ca_chain is the intermediate (and, when Vault includes it, the root); clients trust the root.
    chain = [data["certificate"], *(c for c in data.get("ca_chain", []) if c.strip() != ca_pem.strip())]
    return "\n".join(c.strip() for c in chain) + "\n", data["private_key"].strip() + "\n", data


@dataclass
class Renewer:
    """Keeps every identity's certificate fresh, renewing at two thirds of its life."""

    client: hvac.Client
    ca_pem: str
    ttl_seconds: int = DEFAULT_TTL
    dirs: dict[str, tuple[Identity, CertDir]] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, identity: Identity, root: Path) -> CertDir:
        cert_dir = CertDir(root)
        self.dirs[identity.name] = (identity, cert_dir)
        self.renew(identity.name)
        return cert_dir

    def renew(self, name: str) -> None:
        identity, cert_dir = self.dirs[name]
        with self._lock:  # hvac's session is not meant for two threads at once
            chain, key, data = issue(self.client, identity, self.ttl_seconds, self.ca_pem)
        cert_dir.install(chain, key, self.ca_pem)
        cert_dir.issued_at = time.time()
        cert_dir.expires_at = float(data["expiration"])
        cert_dir.serial = data["serial_number"]
        log.info(
            "certs.renewed", identity=identity.spiffe_id, serial=cert_dir.serial, version=cert_dir.version
        )

    def due(self, cert_dir: CertDir) -> float:
        return cert_dir.issued_at + (cert_dir.expires_at - cert_dir.issued_at) * 2 / 3

    def _run(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            for name, (_, cert_dir) in list(self.dirs.items()):
                if now >= self.due(cert_dir):
                    try:
                        self.renew(name)
                    except Exception as exc:  # Vault down: keep the current cert, try again soon
                        log.warning("certs.renew_failed", identity=name, error=type(exc).__name__)
            next_due = min((self.due(d) for _, d in self.dirs.values()), default=now + 60)
            self._stop.wait(min(max(next_due - time.time(), 1.0), 60.0))

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cert-renewer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
