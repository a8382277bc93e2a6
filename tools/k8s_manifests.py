"""Write the Kubernetes manifests from the services' specs, or check they are fresh.

    python -m tools.k8s_manifests write    # k8s/base/<service>.yaml, both kustomizations
    python -m tools.k8s_manifests check    # exit 1 naming every stale file

One Deployment, ServiceAccount and Service per spec, from k8s/templates/service.yaml; the
base kustomization lists them and the local overlay runs one replica of each. `make gen`
writes them and `make test` checks them, as it does gen/.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from string import Template

from services import catalog
from services.runtime.spec import ServiceSpec

K8S = Path(__file__).resolve().parent.parent / "k8s"
SERVICE_TEMPLATE = K8S / "templates" / "service.yaml"
PORT = 50051  # every service's gRPC port in the cluster
HEADER = "# Generated from the services' specs by tools/k8s_manifests.py (make gen); do not edit.\n"


def _peers(spec: ServiceSpec) -> str:
    if not spec.peers:
        return ""
    value = ",".join(f"{peer}={peer}:{PORT}" for peer in spec.peers)
    return (
        "            # The services it calls (its spec's peers), over mTLS with its own certificate.\n"
        f'            - {{name: DEVMESH_PEERS, value: "{value}"}}\n'
    )


def render() -> dict[Path, str]:
    """Every manifest file, by path, as the specs make it."""
    specs = catalog.every()
    template = Template(SERVICE_TEMPLATE.read_text())
    files = {
        K8S / "base" / f"{spec.name}.yaml": template.substitute(
            name=spec.name, summary=spec.summary, peers=_peers(spec)
        )
        for spec in specs
    }
    resources = "".join(f"  - {spec.name}.yaml\n" for spec in specs)
    files[K8S / "base" / "kustomization.yaml"] = (
        HEADER
        + "# One Deployment per service (DESIGN.md); Redis/Valkey and Vault are provided by the platform.\n"
        + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: devmesh\n"
        + "labels:\n  - pairs: {app.kubernetes.io/part-of: devmesh}\n    includeSelectors: false\n"
        + f"resources:\n{resources}"
    )
    names = "|".join(spec.name for spec in specs)
    files[K8S / "overlays" / "local" / "kustomization.yaml"] = (
        HEADER
        + "# A single replica of each service for a laptop cluster (kind, k3d).\n"
        + "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - ../../base\n"
        + f'patches:\n  - target: {{kind: Deployment, name: "({names})"}}\n    patch: |-\n'
        + "      - op: replace\n        path: /spec/replicas\n        value: 1\n"
    )
    return files


def stale() -> list[Path]:
    """The manifest files that differ from what the specs make (or are missing)."""
    return [path for path, text in render().items() if not path.exists() or path.read_text() != text]


def write() -> None:
    for path, text in render().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    known = set(render())
    for leftover in (K8S / "base").glob("*.yaml"):
        if leftover not in known:
            leftover.unlink()  # a service that left the catalog


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.k8s_manifests")
    parser.add_argument("command", choices=["write", "check"])
    args = parser.parse_args(argv)
    if args.command == "write":
        write()
        return 0
    found = stale()
    for path in found:
        print(f"k8s_manifests: {path.relative_to(K8S.parent)} is stale; run `make gen`", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
