"""Bootstrap Vault/OpenBao for devmesh, idempotently: run it any number of times.

It creates what DESIGN.md says Vault supplies: the KV v2 mount, the transit keys (JWT
signing, envelope encryption), the API-key HMAC pepper in KV, PKI root -> intermediate -> a role issuing
SPIFFE workload certificates, and per service a least-privilege policy (the service's
`VAULT_POLICY`) with an AppRole. Services log in with their AppRole, never the root token.
Each run issues every service a fresh secret_id (in a 0600 file) and retires the one before;
everything else is created once and kept (the pepper above all: every stored key digest
depends on it).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import hvac
from hvac import exceptions as hvac_errors

from services import catalog
from services.runtime import vault
from services.runtime.tls import TRUST_DOMAIN

ROOT_CA_TTL = "87600h"  # 10 years
INTERMEDIATE_TTL = "43800h"  # 5 years: every leaf must end before its issuer does
WORKLOAD_MAX_TTL = "720h"


@dataclass(frozen=True)
class AppRole:
    role_id: str
    secret_id_file: Path


def _ensure_mount(client: hvac.Client, path: str, kind: str, **options: object) -> None:
    if f"{path}/" not in client.sys.list_mounted_secrets_engines()["data"]:
        client.sys.enable_secrets_engine(kind, path=path, **options)


def _ensure_transit_keys(client: hvac.Client, keys: Mapping[str, Mapping[str, object]]) -> None:
    transit = client.secrets.transit
    for name, params in keys.items():
        try:
            transit.read_key(name, mount_point=vault.TRANSIT_MOUNT)
        except hvac_errors.InvalidPath:
            transit.create_key(name, mount_point=vault.TRANSIT_MOUNT, **params)


def _ensure_pepper(client: hvac.Client) -> None:
    """The API-key HMAC pepper: 32 random bytes, written once (cas=0) and never replaced, since
    every stored key digest depends on it."""
    kv = client.secrets.kv.v2
    try:
        kv.read_secret_version(
            vault.API_KEY_PEPPER_PATH, mount_point=vault.KV_MOUNT, raise_on_deleted_version=True
        )
    except hvac_errors.InvalidPath:
        pepper = {"pepper": secrets.token_hex(32)}
        kv.create_or_update_secret(vault.API_KEY_PEPPER_PATH, pepper, cas=0, mount_point=vault.KV_MOUNT)


def _has_ca(client: hvac.Client, mount: str) -> bool:
    return bool(client.secrets.pki.read_ca_certificate(mount_point=mount).strip())


def _ensure_pki(client: hvac.Client) -> None:
    pki = client.secrets.pki
    _ensure_mount(client, vault.PKI_ROOT_MOUNT, "pki", config={"max_lease_ttl": ROOT_CA_TTL})
    _ensure_mount(client, vault.PKI_MOUNT, "pki", config={"max_lease_ttl": INTERMEDIATE_TTL})
    if not _has_ca(client, vault.PKI_ROOT_MOUNT):
        pki.generate_root(
            "internal",
            "devmesh root CA",
            extra_params={"ttl": ROOT_CA_TTL, "key_type": "ec", "key_bits": 256},
            mount_point=vault.PKI_ROOT_MOUNT,
        )
    if not _has_ca(client, vault.PKI_MOUNT):
        csr = pki.generate_intermediate(
            "internal", "devmesh intermediate CA", extra_params={"key_type": "ec", "key_bits": 256},
            mount_point=vault.PKI_MOUNT,
        )["data"]["csr"]  # fmt: skip
        signed = pki.sign_intermediate(
            csr, "devmesh intermediate CA", extra_params={"ttl": INTERMEDIATE_TTL, "format": "pem_bundle"},
            mount_point=vault.PKI_ROOT_MOUNT,
        )["data"]["certificate"]  # fmt: skip
        pki.set_signed_intermediate(signed, mount_point=vault.PKI_MOUNT)
    pki.create_or_update_role(
        vault.PKI_ROLE,
        extra_params={
            "allowed_domains": [TRUST_DOMAIN, "localhost"],
            "allow_subdomains": True,
            "allow_bare_domains": True,
            "allow_localhost": True,
            "allow_ip_sans": True,
            "allowed_uri_sans": [f"spiffe://{TRUST_DOMAIN}/ns/*/sa/*"],
            "key_type": "ec",
            "key_bits": 256,
            "ttl": "24h",
            "max_ttl": WORKLOAD_MAX_TTL,
            "server_flag": True,
            "client_flag": True,
            "require_cn": False,
        },
        mount_point=vault.PKI_MOUNT,
    )


def _ensure_approle(client: hvac.Client, service: str, policy: str, secrets_dir: Path) -> AppRole:
    name = f"devmesh-{service}"
    client.sys.create_or_update_policy(name, vault.RUNTIME_POLICY + policy)
    client.auth.approle.create_or_update_approle(
        name, token_policies=[name], token_ttl="1h", token_max_ttl="24h", secret_id_ttl="720h"
    )
    role_id = client.auth.approle.read_role_id(name)["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id(name)["data"]["secret_id"]
    secrets_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = secrets_dir / f"{service}.secret_id"
    previous = path.read_text().strip() if path.exists() else ""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret_id)
    if previous:
        # Vault kept the data of an earlier start: retire that start's secret_id rather than
        # leave one more valid credential behind per start. Already gone (expired, or a Vault
        # that lost its data) is fine.
        with contextlib.suppress(hvac_errors.VaultError):
            client.auth.approle.destroy_secret_id(name, previous)
    return AppRole(role_id, path)


def bootstrap(client: hvac.Client, services: list[str], secrets_dir: Path) -> dict[str, AppRole]:
    """Make Vault ready for `services`; returns each service's AppRole (secret_id in a 0600 file)."""
    _ensure_mount(client, vault.KV_MOUNT, "kv", options={"version": "2"})
    _ensure_mount(client, vault.TRANSIT_MOUNT, "transit")
    specs = catalog.resolve(services)
    keys = {**vault.RUNTIME_TRANSIT_KEYS, **{k: v for spec in specs for k, v in spec.transit_keys.items()}}
    _ensure_transit_keys(client, keys)
    _ensure_pepper(client)
    _ensure_pki(client)
    if "approle/" not in client.sys.list_auth_methods()["data"]:
        client.sys.enable_auth_method("approle")
    return {spec.name: _ensure_approle(client, spec.name, spec.vault_policy, secrets_dir) for spec in specs}


def root_ca(client: hvac.Client) -> str:
    """The mesh trust anchor (PEM): the root CA every workload certificate chains to."""
    return str(client.secrets.pki.read_ca_certificate(mount_point=vault.PKI_ROOT_MOUNT)).strip() + "\n"
