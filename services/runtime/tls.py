"""mTLS for devmesh servers and clients, with certificates that rotate without a restart.

Certificates live in files that something else renews (the local stack's renewal loop,
cert-manager or a Vault agent in Kubernetes) and swaps atomically: `current -> vN` symlink
swaps, or Kubernetes' `..data` swaps. The server asks for its configuration at every
handshake; `CertificateFiles` answers from memory unless a file changed, so a renewed
certificate is served from the next connection on, and open connections keep theirs.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

import grpc

from services.runtime.logging import get_logger

log = get_logger(__name__)

TRUST_DOMAIN = "devmesh.local"


def spiffe_id(namespace: str, service: str) -> str:
    """The mesh identity of a workload: `spiffe://devmesh.local/ns/<namespace>/sa/<service>`."""
    return f"spiffe://{TRUST_DOMAIN}/ns/{namespace}/sa/{service}"


@dataclass(frozen=True)
class Pem:
    cert_chain: bytes
    key: bytes
    ca: bytes


class CertificateFiles:
    """A certificate chain, its key and the trusted CA bundle, re-read when any of them changes."""

    def __init__(self, cert_file: str, key_file: str, ca_file: str) -> None:
        self.paths = (cert_file, key_file, ca_file)
        self._lock = threading.Lock()
        self._stamp = self._fingerprint()
        self.pem = self._read()

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        # realpath sees through symlink swaps; inode and mtime see files replaced in place.
        stamps = []
        for path in self.paths:
            real = os.path.realpath(path)
            st = os.stat(real)
            stamps.append((real, st.st_ino, st.st_mtime_ns))
        return tuple(stamps)

    def _read(self) -> Pem:
        contents = []
        for path in self.paths:
            with open(path, "rb") as f:
                contents.append(f.read())
        return Pem(*contents)

    def refresh(self) -> bool:
        """Re-read the files if they changed since the last read; True when they did.

        A swap that lands between two reads can pair a new certificate with an old key, so
        the files are read until the fingerprint is the same before and after.
        """
        with self._lock:
            stamp = self._fingerprint()
            if stamp == self._stamp:
                return False
            for _ in range(5):
                pem = self._read()
                after = self._fingerprint()
                if after == stamp:
                    break
                stamp = after
            self.pem, self._stamp = pem, stamp
        log.info("tls.certificate_reloaded", cert_file=stamp[0][0])
        return True

    def server_credentials(self) -> grpc.ServerCredentials:
        """Credentials that require a client certificate from the CA and follow file changes."""

        def configuration() -> grpc.ServerCertificateConfiguration:
            return grpc.ssl_server_certificate_configuration(
                [(self.pem.key, self.pem.cert_chain)], root_certificates=self.pem.ca
            )

        def fetch() -> grpc.ServerCertificateConfiguration | None:
            # Runs on a gRPC core thread at every handshake: None keeps the current configuration.
            try:
                return configuration() if self.refresh() else None
            except OSError as exc:
                log.warning("tls.reload_failed", error=type(exc).__name__, path=exc.filename)
                return None

        return grpc.dynamic_ssl_server_credentials(configuration(), fetch, require_client_authentication=True)
