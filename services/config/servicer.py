"""ConfigService over gRPC: converts protos to domain calls and domain results to protos."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from google.protobuf import empty_pb2, json_format, struct_pb2
from grpc import aio

from devmesh.config.v1 import config_pb2, config_pb2_grpc
from services.config import documents, models, names
from services.config.domain import NAMESPACE_FIELDS, READ_CACHE_SIZE, ConfigDomain
from services.config.read_cache import RevisionCache
from services.config.secrets_client import SecretResolver
from services.config.watch import Progress, SecretRotated, WatchHub
from services.runtime import protos, request_context
from services.runtime.errors import FailedPrecondition, InvalidArgument

_EMPTY = empty_pb2.Empty()


def _struct(document: documents.Document) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(document)
    return message


def _value(value: Any) -> struct_pb2.Value:
    return json_format.ParseDict(value, struct_pb2.Value())


def namespace_proto(record: models.Namespace) -> config_pb2.Namespace:
    message = config_pb2.Namespace(
        name=names.namespace_name(record.id),
        display_name=record.display_name,
        description=record.description,
        labels=record.labels,
        revision=record.revision,
        create_time=protos.timestamp(record.create_time_us),
        update_time=protos.timestamp(record.update_time_us),
        etag=record.etag,
    )
    if record.schema is not None:
        message.schema.CopyFrom(_struct(record.schema))
    return message


def environment_proto(record: models.Environment, *, full: bool = True) -> config_pb2.Environment:
    return config_pb2.Environment(
        name=names.environment_name(record.namespace, record.id),
        content=_struct(record.content) if full else None,
        revision=record.revision,
        create_time=protos.timestamp(record.create_time_us),
        update_time=protos.timestamp(record.update_time_us),
        etag=record.etag,
    )


def revision_proto(record: models.Revision, *, full: bool = True) -> config_pb2.Revision:
    return config_pb2.Revision(
        name=names.revision_name(record.namespace, record.revision),
        revision=record.revision,
        environment=record.environment,
        action=config_pb2.Action.Value(f"ACTION_{record.action}"),
        content=_struct(record.content) if full and record.content is not None else None,
        author=record.author,
        reason=record.reason,
        create_time=protos.optional_timestamp(record.create_time_us),
        source_revision=record.source_revision,
    )


_CONSISTENCIES = frozenset(config_pb2.ReadConsistency.values())


def _cached(consistency: int) -> bool:
    """Whether a read may be served from this replica's view (READ_CONSISTENCY_CACHED)."""
    if consistency not in _CONSISTENCIES:
        raise InvalidArgument.for_field("consistency", f"{consistency} is not a ReadConsistency value")
    return consistency == config_pb2.READ_CONSISTENCY_CACHED


def change_response(record: models.Revision) -> config_pb2.WatchConfigResponse:
    return config_pb2.WatchConfigResponse(change=revision_proto(record))


def _progress_response(revision: int) -> bytes:
    return config_pb2.WatchConfigResponse(
        progress=config_pb2.WatchProgress(revision=revision)
    ).SerializeToString()


# Revisions whose WatchConfig message is kept serialized. A burst of writes reaches the
# watchers of a namespace in near lockstep, so a few dozen cover it; a miss costs only
# what every stream paid before (building and serializing the message itself).
SERIALIZED_CHANGES = 64


def resolved_proto(resolved: models.Resolved) -> config_pb2.ResolvedConfig:
    return config_pb2.ResolvedConfig(
        name=names.environment_name(resolved.namespace, resolved.environment),
        content=_struct(resolved.content),
        sources=[config_pb2.ValueSource(path=p, environment=e) for p, e in resolved.sources],
        revision=resolved.revision,
    )


def _namespace_fields(message: config_pb2.Namespace) -> models.Namespace:
    return models.Namespace(
        id="",
        display_name=message.display_name,
        description=message.description,
        labels=dict(message.labels),
        schema=protos.document(message.schema, "namespace.schema") if message.HasField("schema") else None,
    )


def _implied_namespace_mask(message: config_pb2.Namespace) -> list[str]:
    """AIP-134: without an update_mask, update every field that is set."""
    present = {field.name for field, _ in message.ListFields()}
    return [f for f in NAMESPACE_FIELDS if f in present]


class ConfigServicer(config_pb2_grpc.ConfigServiceServicer):
    def __init__(self, domain: ConfigDomain, hub: WatchHub, secrets: SecretResolver | None = None) -> None:
        self.domain = domain
        self.hub = hub
        self.secrets = secrets  # reads secret references for resolve_secrets; None: not configured
        # Built protos, reused while the record's revision (which identifies its content) is the
        # same: the domain's read cache made the reads cheap, building Structs would not be.
        # Cached protos are shared between calls and never mutated.
        self._environment_protos: RevisionCache[tuple[str, str], config_pb2.Environment] = RevisionCache(
            READ_CACHE_SIZE
        )
        self._resolved_protos: RevisionCache[tuple[str, str], config_pb2.ResolvedConfig] = RevisionCache(
            READ_CACHE_SIZE
        )
        # One write reaches every watcher of its namespace: its message is built and serialized
        # once, and every stream hands grpc the same bytes (the call pipeline sends bytes as
        # they are).
        self._serialized_changes: RevisionCache[tuple[str, int], bytes] = RevisionCache(SERIALIZED_CHANGES)

    async def CreateNamespace(
        self, request: config_pb2.CreateNamespaceRequest, context: aio.ServicerContext
    ) -> config_pb2.Namespace:
        record = await self.domain.create_namespace(
            request.namespace_id,
            _namespace_fields(request.namespace),
            request.reason,
            request_context.principal_name(),
        )
        return namespace_proto(record)

    async def GetNamespace(
        self, request: config_pb2.GetNamespaceRequest, context: aio.ServicerContext
    ) -> config_pb2.Namespace:
        return namespace_proto(await self.domain.get_namespace(names.parse_namespace(request.name)))

    async def ListNamespaces(
        self, request: config_pb2.ListNamespacesRequest, context: aio.ServicerContext
    ) -> config_pb2.ListNamespacesResponse:
        page, token = await self.domain.list_namespaces(request.page_size, request.page_token)
        return config_pb2.ListNamespacesResponse(
            namespaces=[namespace_proto(n) for n in page], next_page_token=token
        )

    async def UpdateNamespace(
        self, request: config_pb2.UpdateNamespaceRequest, context: aio.ServicerContext
    ) -> config_pb2.Namespace:
        ns = names.parse_namespace(request.namespace.name, "namespace.name")
        mask = list(request.update_mask.paths) or _implied_namespace_mask(request.namespace)
        record = await self.domain.update_namespace(
            ns,
            _namespace_fields(request.namespace),
            mask,
            request.namespace.etag,
            request.reason,
            request_context.principal_name(),
        )
        return namespace_proto(record)

    async def DeleteNamespace(
        self, request: config_pb2.DeleteNamespaceRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        await self.domain.delete_namespace(
            names.parse_namespace(request.name),
            request.etag,
            request.force,
            request.reason,
            request_context.principal_name(),
        )
        return _EMPTY

    async def GetEnvironment(
        self, request: config_pb2.GetEnvironmentRequest, context: aio.ServicerContext
    ) -> config_pb2.Environment:
        ns, env = names.parse_environment(request.name)
        record = await self.domain.get_environment(ns, env, cached=_cached(request.consistency))
        return self._environment_protos.get_or_build(
            (ns, env), record.revision, lambda: environment_proto(record)
        )

    async def ListEnvironments(
        self, request: config_pb2.ListEnvironmentsRequest, context: aio.ServicerContext
    ) -> config_pb2.ListEnvironmentsResponse:
        ns = names.parse_namespace(request.parent, "parent")
        page, token = await self.domain.list_environments(ns, request.page_size, request.page_token)
        full = request.view == config_pb2.VIEW_FULL
        return config_pb2.ListEnvironmentsResponse(
            environments=[environment_proto(e, full=full) for e in page], next_page_token=token
        )

    async def UpdateEnvironment(
        self, request: config_pb2.UpdateEnvironmentRequest, context: aio.ServicerContext
    ) -> config_pb2.Environment:
        ns, env = names.parse_environment(request.environment.name, "environment.name")
        extra = [p for p in request.update_mask.paths if p != "content"]
        if extra:
            raise InvalidArgument.for_field("update_mask", f"only 'content' is updatable, not {extra[0]!r}")
        record = await self.domain.update_environment(
            ns,
            env,
            protos.document(request.environment.content, "environment.content"),
            etag=request.environment.etag,
            allow_missing=request.allow_missing,
            reason=request.reason,
            actor=request_context.principal_name(),
        )
        return environment_proto(record)

    async def DeleteEnvironment(
        self, request: config_pb2.DeleteEnvironmentRequest, context: aio.ServicerContext
    ) -> empty_pb2.Empty:
        ns, env = names.parse_environment(request.name)
        await self.domain.delete_environment(
            ns, env, request.etag, request.reason, request_context.principal_name()
        )
        return _EMPTY

    async def ResolveConfig(
        self, request: config_pb2.ResolveConfigRequest, context: aio.ServicerContext
    ) -> config_pb2.ResolvedConfig:
        ns, env = names.parse_environment(request.name)
        resolved = await self.domain.resolve(ns, env, cached=_cached(request.consistency))
        if request.resolve_secrets:
            return await self._with_secrets(resolved)
        return self._resolved_protos.get_or_build(
            (ns, env), resolved.revision, lambda: resolved_proto(resolved)
        )

    async def _with_secrets(self, resolved: models.Resolved) -> config_pb2.ResolvedConfig:
        """The resolved document with secret references read as the caller (never cached)."""
        if self.secrets is None:
            raise FailedPrecondition(
                "this config service is not connected to a secrets service (DEVMESH_CONFIG_SECRETS_ADDR)",
                reason="SECRETS_NOT_CONFIGURED",
            )
        content, resolutions = await self.secrets.resolve(resolved.content, request_context.forwardable.get())
        message = resolved_proto(resolved)
        message.content.Clear()
        message.content.update(content)
        message.secrets.extend(
            config_pb2.SecretResolution(
                path=r.path, reference=r.reference, version=r.version, redacted_reason=r.redacted_reason
            )
            for r in resolutions
        )
        return message

    async def ListRevisions(
        self, request: config_pb2.ListRevisionsRequest, context: aio.ServicerContext
    ) -> config_pb2.ListRevisionsResponse:
        ns = names.parse_namespace(request.parent, "parent")
        page, token = await self.domain.list_revisions(
            ns, request.environment, request.page_size, request.page_token
        )
        full = request.view == config_pb2.VIEW_FULL
        return config_pb2.ListRevisionsResponse(
            revisions=[revision_proto(r, full=full) for r in page], next_page_token=token
        )

    async def GetRevision(
        self, request: config_pb2.GetRevisionRequest, context: aio.ServicerContext
    ) -> config_pb2.Revision:
        return revision_proto(await self.domain.get_revision(*names.parse_revision(request.name)))

    async def DiffRevisions(
        self, request: config_pb2.DiffRevisionsRequest, context: aio.ServicerContext
    ) -> config_pb2.DiffRevisionsResponse:
        ns, env = names.parse_environment(request.name)
        base, target, changes = await self.domain.diff(
            ns, env, request.base_revision, request.target_revision
        )
        return config_pb2.DiffRevisionsResponse(
            base_revision=base,
            target_revision=target,
            changes=[
                config_pb2.Change(
                    operation=config_pb2.ChangeOperation.Value(f"CHANGE_OPERATION_{c.operation}"),
                    path=c.path,
                    old_value=_value(c.old) if c.operation != documents.ADD else None,
                    new_value=_value(c.new) if c.operation != documents.REMOVE else None,
                )
                for c in changes
            ],
        )

    async def RollbackEnvironment(
        self, request: config_pb2.RollbackEnvironmentRequest, context: aio.ServicerContext
    ) -> config_pb2.Environment:
        ns, env = names.parse_environment(request.name)
        record = await self.domain.rollback(
            ns, env, request.revision, request.etag, request.reason, request_context.principal_name()
        )
        return environment_proto(record)

    async def WatchConfig(  # type: ignore[override]  # some messages go out serialized (bytes)
        self, request: config_pb2.WatchConfigRequest, context: aio.ServicerContext
    ) -> AsyncIterator[config_pb2.WatchConfigResponse | bytes]:
        ns, env = names.parse_environment(request.name, allow_all=True)
        if request.since_revision < 0:
            raise InvalidArgument.for_field("since_revision", "must not be negative")
        changes = self._serialized_changes
        async for event in self.hub.watch(ns, env, request.since_revision):
            if isinstance(event, Progress):
                yield _progress_response(event.revision)
            elif isinstance(event, SecretRotated):
                rotated = config_pb2.SecretRotated(
                    secret=f"secrets/{event.secret}",
                    version=event.version,
                    environment=event.environment,
                    paths=event.paths,
                )
                yield config_pb2.WatchConfigResponse(secret_rotated=rotated)
            else:
                key = (ns, event.revision)  # revision numbers are never reused (store.py)
                serialized = changes.get(key, event.revision)
                if serialized is None:
                    serialized = change_response(event).SerializeToString()
                    changes.put(key, event.revision, serialized)
                yield serialized
