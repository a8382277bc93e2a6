"""The catalog's specs against the contracts: every proto service is served by exactly one spec,
every method has a handler (or is listed as deliberately not built), every permission is held
by some role, and every grant names permissions that exist. (test_contracts checks that every
RPC has an HTTP binding, a permission and documented errors.)"""

from __future__ import annotations

import importlib
import inspect

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from devmesh.options.v1 import options_pb2
from services import catalog
from services.runtime.identity import roles
from services.runtime.spec import ServiceSpec
from tests.contract.test_contracts import OURS

SPECS = catalog.every()
CONTRACT_SERVICES = [f"{f.package}.{s.name}" for f in OURS for s in f.service]
SERVED = [(spec, name) for spec in SPECS for name in spec.proto_services]
POOL = descriptor_pool.Default()


def _methods(service: str) -> list[tuple[str, descriptor_pb2.MethodOptions]]:
    found = []
    for method in POOL.FindServiceByName(service).methods:
        options = descriptor_pb2.MethodOptions.FromString(method.GetOptions().SerializeToString())
        found.append((f"/{service}/{method.name}", options))
    return found


PERMISSIONS = sorted(
    {opts.Extensions[options_pb2.policy].permission for s in CONTRACT_SERVICES for _, opts in _methods(s)}
    - {""}
)


def test_the_catalog_names_each_spec_by_its_own_name() -> None:
    assert [spec.name for spec in SPECS] == list(catalog.SERVICES)
    assert all(isinstance(spec, ServiceSpec) for spec in SPECS)


@pytest.mark.parametrize("service", CONTRACT_SERVICES)
def test_every_proto_service_is_served_by_exactly_one_spec(service: str) -> None:
    serving = [spec.name for spec in SPECS if service in spec.proto_services]
    assert len(serving) == 1, f"{service} is served by {serving or 'no spec'}"


def _generated_base(service: str) -> type:
    """The generated `<Service>Servicer` base class of a proto service."""
    descriptor = POOL.FindServiceByName(service)
    module = importlib.import_module(
        descriptor.file.name.removesuffix(".proto").replace("/", ".") + "_pb2_grpc"
    )
    base = getattr(module, f"{descriptor.name}Servicer")
    assert isinstance(base, type)
    return base


@pytest.mark.parametrize(("spec", "service"), SERVED, ids=[f"{s.name}:{n}" for s, n in SERVED])
def test_every_method_has_a_handler_unless_it_is_listed_as_not_built(spec: ServiceSpec, service: str) -> None:
    servicer, base = spec.servicers[service], _generated_base(service)
    assert issubclass(servicer, base), f"{servicer.__name__} does not derive from {base.__name__}"
    for full_method, _ in _methods(service):
        name = full_method.rsplit("/", 1)[1]
        built = getattr(servicer, name) is not getattr(base, name)
        if full_method in spec.unimplemented:
            assert not built, f"{full_method} is built but listed as not built"
        else:
            assert built, f"{full_method} has no handler: build it or list it in {spec.name}'s unimplemented"


@pytest.mark.parametrize(("spec", "service"), SERVED, ids=[f"{s.name}:{n}" for s, n in SERVED])
def test_streaming_handlers_yield_their_messages(spec: ServiceSpec, service: str) -> None:
    servicer = spec.servicers[service]
    for method in POOL.FindServiceByName(service).methods:
        handler = getattr(servicer, method.name)
        if f"/{service}/{method.name}" in spec.unimplemented:
            continue  # the generated base's handler, which answers UNIMPLEMENTED
        if method.server_streaming:
            assert inspect.isasyncgenfunction(handler), f"{method.name} must be an async generator"
        elif not method.client_streaming:
            assert inspect.iscoroutinefunction(handler), f"{method.name} must be a coroutine function"


@pytest.mark.parametrize("permission", PERMISSIONS)
def test_every_permission_is_held_by_admin_and_by_another_role_unless_admin_only(permission: str) -> None:
    assert roles.role_allows(roles.ADMIN, permission)
    others = [role for role in roles.ROLE_NAMES[1:] if roles.role_allows(role, permission)]
    admin_only = any(roles.matches(pattern, permission) for pattern in roles.ADMIN_ONLY)
    assert bool(others) != admin_only, f"{permission}: held by {others or 'admin alone'}"


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_every_grant_names_permissions_of_its_own_service_that_exist(spec: ServiceSpec) -> None:
    own = [p for p in PERMISSIONS if p.startswith(f"{spec.name}.")]
    for role, patterns in spec.grants.items():
        for pattern in [*patterns, *spec.admin_only]:
            assert pattern.startswith(f"{spec.name}."), f"{spec.name} grants {role} a foreign {pattern!r}"
            assert any(roles.matches(pattern, p) for p in own), f"{pattern!r} matches no permission"


@pytest.mark.parametrize("spec", SPECS, ids=[s.name for s in SPECS])
def test_peers_and_read_verbs_name_what_exists(spec: ServiceSpec) -> None:
    assert set(spec.peers) <= set(catalog.SERVICES) - {spec.name}
    verbs = {p.rsplit(".", 1)[1] for p in PERMISSIONS if p.startswith(f"{spec.name}.")}
    assert spec.read_verbs & verbs, f"{spec.name}'s read verbs match none of its permissions"


def test_nothing_listed_as_not_built_is_unknown() -> None:
    known = {m for s in CONTRACT_SERVICES for m, _ in _methods(s)}
    for spec in SPECS:
        assert spec.unimplemented <= known, spec.unimplemented - known
