"""mTLS at the edge and between the edge and the services: who is refused, and rotation."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading
import time
from pathlib import Path

import grpc
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devmesh.config.v1 import config_pb2 as pb
from devmesh.config.v1 import config_pb2_grpc
from tests.e2e.conftest import HEALTH_INTERVAL, Rest, envoy_stats
from tools.envoy_config import EdgeSettings, Upstream
from tools.stack.certs import CertDir, CertPaths, Identity, Renewer, issue
from tools.stack.channels import grpc_channel
from tools.stack.envoy import start_envoy
from tools.stack.local import SERVICE_NAMESPACE, Stack
from tools.stack.processes import LOOPBACK, free_port, wait_until
from tools.stack.service_process import restart_service, start_service

OPERATOR_ID = "spiffe://devmesh.local/ns/ops/sa/operator"


def _failures(mesh: Stack) -> dict[str, int]:
    assert mesh.envoy is not None
    stats = envoy_stats(mesh.envoy.admin_url, "ssl.fail_verify")
    totals: dict[str, int] = {}
    for name, value in stats.items():
        if name.startswith("listener."):
            reason = name.rsplit(".", 1)[1]
            totals[reason] = totals.get(reason, 0) + value
    return totals


def _refused(edge: str, ca: Path, cert: tuple[str, str] | None) -> bool:
    session = requests.Session()
    session.trust_env = False
    try:
        session.get(f"https://{edge}/v1/namespaces", cert=cert, verify=str(ca), timeout=5)
    except (requests.exceptions.SSLError, requests.exceptions.ConnectionError):
        return True
    finally:
        session.close()
    return False


def _self_signed_ca_and_leaf(tmp_path: Path) -> tuple[str, str]:
    """A CA that is not the mesh's, and a leaf it signed carrying the operator's SPIFFE ID."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "impostor CA")])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder().subject_name(x509.Name([])).issuer_name(ca_name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(OPERATOR_ID)]), critical=True)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp_path / "impostor.pem", tmp_path / "impostor.key"
    cert_path.write_bytes(
        leaf.public_bytes(serialization.Encoding.PEM) + ca_cert.public_bytes(serialization.Encoding.PEM)
    )
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return str(cert_path), str(key_path)


def test_a_client_without_a_certificate_is_refused(mesh: Stack, edge: str, operator: CertPaths) -> None:
    before = _failures(mesh).get("fail_verify_no_cert", 0)
    assert _refused(edge, operator.ca, None)
    assert _failures(mesh)["fail_verify_no_cert"] == before + 1


def test_a_certificate_from_another_ca_is_refused(
    mesh: Stack, edge: str, operator: CertPaths, tmp_path: Path
) -> None:
    before = _failures(mesh).get("fail_verify_error", 0)
    assert _refused(edge, operator.ca, _self_signed_ca_and_leaf(tmp_path))
    assert _failures(mesh)["fail_verify_error"] == before + 1


def test_an_expired_mesh_certificate_is_refused(
    mesh: Stack, edge: str, operator: CertPaths, tmp_path: Path
) -> None:
    assert mesh.vault is not None and mesh.renewer is not None
    identity = Identity("expired", OPERATOR_ID)
    chain, key, data = issue(mesh.vault.client(), identity, 1, mesh.renewer.ca_pem)
    (tmp_path / "cert.pem").write_text(chain)
    (tmp_path / "key.pem").write_text(key)
    # Expiry is the point of this test: wait until the certificate's notAfter has passed.
    time.sleep(max(0.0, float(data["expiration"]) - time.time() + 1.1))
    before = _failures(mesh).get("fail_verify_error", 0)
    assert _refused(edge, operator.ca, (str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")))
    assert _failures(mesh)["fail_verify_error"] == before + 1
    assert not _refused(edge, operator.ca, (str(operator.cert), str(operator.key)))


def test_the_edge_refuses_an_upstream_with_the_wrong_identity(mesh: Stack, tmp_path: Path) -> None:
    """A process answering on the config service's address with another SPIFFE ID gets no traffic."""
    assert mesh.renewer is not None
    impostor_dir = mesh.renewer.add(Identity.workload(SERVICE_NAMESPACE, "impostor"), tmp_path / "impostor")
    impostor = start_service(
        ["config"], mesh.redis_url, tmp_path / "logs", tls=impostor_dir.current, client_tls=mesh.operator_tls
    )
    settings = EdgeSettings(LOOPBACK, free_port(), free_port(), mesh.certs["edge"].root, HEALTH_INTERVAL)
    port = int(impostor.addr.rpartition(":")[2])
    envoy = start_envoy(
        settings,
        [Upstream("config", LOOPBACK, port)],
        tmp_path / "envoy",
        tmp_path / "logs",
        wait_healthy=False,
    )
    try:
        with grpc_channel(envoy.edge_addr, mesh.operator_tls) as channel:
            stub = config_pb2_grpc.ConfigServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.ListNamespaces(pb.ListNamespacesRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        san_failures = envoy_stats(envoy.admin_url, "cluster.config.ssl.fail_verify_san")
        assert san_failures["cluster.config.ssl.fail_verify_san"] >= 1
    finally:
        envoy.process.stop()
        impostor.process.stop()
        del mesh.renewer.dirs["impostor"]


def _served_serial(addr: str, tls: CertPaths) -> int:
    """The serial number of the certificate a server presents to a new connection."""
    context = ssl.create_default_context(cafile=str(tls.ca))
    context.load_cert_chain(str(tls.cert), str(tls.key))
    context.set_alpn_protocols(["h2"])
    host, _, port = addr.rpartition(":")
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return int(x509.load_der_x509_certificate(der).serial_number)


def _serial(cert_dir: CertDir) -> int:
    return int(cert_dir.serial.replace(":", ""), 16)


def test_rotating_edge_and_service_certificates_under_load_loses_nothing(
    mesh: Stack, edge: str, operator: CertPaths, admin_key: str
) -> None:
    assert mesh.renewer is not None
    stop = threading.Event()
    done: list[int] = []
    failed: list[str] = []

    def load() -> None:
        while not stop.is_set():
            # A fresh connection every few calls, so handshakes happen throughout the rotation.
            with grpc_channel(edge, operator, admin_key) as channel:
                stub = config_pb2_grpc.ConfigServiceStub(channel)
                for _ in range(10):
                    try:
                        stub.ListNamespaces(pb.ListNamespacesRequest(page_size=1), timeout=10)
                        done.append(1)
                    except grpc.RpcError as exc:
                        failed.append(f"{exc.code()}: {exc.details()}")

    workers = [threading.Thread(target=load) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        wait_until(lambda: len(done) >= 50, 30, "load running")
        service = mesh.services["config"]
        mesh.renewer.renew("edge")
        mesh.renewer.renew("config")
        edge_serial, service_serial = _serial(mesh.certs["edge"]), _serial(mesh.certs["config"])
        wait_until(
            lambda: _served_serial(edge, operator) == edge_serial, 20, "envoy serves the new certificate"
        )
        wait_until(
            lambda: _served_serial(service.addr, operator) == service_serial, 20, "service serves the new one"
        )
        target = len(done) + 200
        wait_until(lambda: len(done) >= target, 60, "load after rotation")
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failed == []


def test_a_killed_service_is_unavailable_then_recovers(
    mesh: Stack, config_stub: config_pb2_grpc.ConfigServiceStub, rest: Rest
) -> None:
    service = mesh.services["config"]
    service.process.kill()
    try:
        with pytest.raises(grpc.RpcError) as caught:
            config_stub.ListNamespaces(pb.ListNamespacesRequest(), timeout=5)
        assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
        response = rest("GET", "/v1/namespaces")
        assert response.status_code == 503
        assert response.json()["code"] == 14
    finally:
        mesh.services["config"] = restart_service(service)

    def answers() -> bool:
        config_stub.ListNamespaces(pb.ListNamespacesRequest(), timeout=2)
        return True

    wait_until(answers, 30, "traffic through the same Envoy after the restart")
    assert rest("GET", "/v1/namespaces").status_code == 200


def test_certificates_renew_at_two_thirds_of_their_life(mesh: Stack, tmp_path: Path) -> None:
    assert mesh.vault is not None and mesh.renewer is not None
    renewer = Renewer(mesh.vault.client(), mesh.renewer.ca_pem, ttl_seconds=3)
    cert_dir = renewer.add(Identity.workload(SERVICE_NAMESPACE, "short-lived"), tmp_path / "short")
    first_issued, first_serial = cert_dir.issued_at, cert_dir.serial
    renewer.start()
    try:
        wait_until(lambda: cert_dir.version == 2, 15, "a renewal")
    finally:
        renewer.stop()
    assert cert_dir.serial != first_serial
    assert cert_dir.issued_at - first_issued >= 2 * (cert_dir.expires_at - cert_dir.issued_at) / 3 - 0.5
    assert (tmp_path / "short" / "current").resolve().name == "v2"
