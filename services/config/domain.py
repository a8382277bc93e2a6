"""The config service's rules: what each operation checks, decides and writes.

No gRPC here: the servicer converts protos to these calls and these results back.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from services.config import documents, models, schema
from services.config.names import BASE_ENVIRONMENT, check_id, environment_name, namespace_name, revision_name
from services.config.read_cache import RevisionCache
from services.config.settings import ConfigSettings
from services.config.store import Change, ConfigStore, Snapshot
from services.runtime import etags
from services.runtime.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PreconditionViolation,
)
from services.runtime.pagination import decode_token, encode_token, page_size

MAX_DISPLAY_NAME = 128
MAX_TEXT = 1024
MAX_LABELS = 64
MAX_LABEL_VALUE = 256
LABEL_KEY = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
NAMESPACE_FIELDS = ("display_name", "description", "labels", "schema")


def _namespace_missing(ns: str) -> NotFound:
    return NotFound(
        f"namespace {ns!r} does not exist", resource_type="Namespace", resource_name=namespace_name(ns)
    )


def _environment_missing(ns: str, env: str) -> NotFound:
    return NotFound(
        f"environment {env!r} does not exist in namespace {ns!r}",
        resource_type="Environment",
        resource_name=environment_name(ns, env),
    )


def check_text(value: str, field: str, limit: int) -> str:
    if len(value) > limit:
        raise InvalidArgument.for_field(field, f"is {len(value)} characters; the limit is {limit}")
    return value


def check_labels(labels: Mapping[str, str], field: str) -> dict[str, str]:
    problems = []
    if len(labels) > MAX_LABELS:
        problems.append(FieldViolation(field, f"{len(labels)} labels; the limit is {MAX_LABELS}"))
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            problems.append(FieldViolation(f"{field}[{key[:64]!r}]", "keys match [a-z][a-z0-9_.-]{0,62}"))
        if len(value) > MAX_LABEL_VALUE:
            problems.append(
                FieldViolation(f"{field}[{key[:64]!r}]", f"values are at most {MAX_LABEL_VALUE} characters")
            )
    if problems:
        raise InvalidArgument(f"{field}: {problems[0].description}", problems)
    return dict(labels)


READ_CACHE_SIZE = 4096


class ConfigDomain:
    def __init__(self, store: ConfigStore, settings: ConfigSettings) -> None:
        self.store = store
        self.settings = settings
        self._environments: RevisionCache[tuple[str, str], models.Environment] = RevisionCache(
            READ_CACHE_SIZE
        )
        self._resolved: RevisionCache[tuple[str, str], models.Resolved] = RevisionCache(READ_CACHE_SIZE)

    # -- documents and schema -----------------------------------------------------------

    def check_document(self, content: documents.Document, field: str) -> None:
        documents.check_limits(
            content,
            field,
            max_bytes=self.settings.config_max_document_bytes,
            max_depth=self.settings.config_max_document_depth,
        )

    @staticmethod
    def _schema_violations(
        ns: str,
        namespace_schema: dict[str, Any] | None,
        base: documents.Document,
        layers: Mapping[str, documents.Document],
        *,
        proposed: bool,
    ) -> list[FieldViolation]:
        """Validate the resolved document of each environment in `layers` (id -> its own document).

        `base` is the `default` layer they overlay; `layers` may name `default` itself.
        `proposed`: the schema is the request's (so a schema that cannot check them is the
        caller's INVALID_ARGUMENT), not the namespace's (FAILED_PRECONDITION).
        """
        if namespace_schema is None:
            return []
        found: list[FieldViolation] = []
        for env in sorted(layers):
            stack = [(BASE_ENVIRONMENT, base)]
            if env != BASE_ENVIRONMENT:
                stack.append((env, layers[env]))
            resolved, _ = documents.resolve(stack)
            try:
                found.extend(schema.violations(namespace_schema, resolved, env))
            except schema.SchemaUnusable as exc:
                if proposed:
                    raise InvalidArgument(
                        f"namespace.schema: {exc}",
                        [FieldViolation("namespace.schema", str(exc), exc.reason)],
                        reason=exc.reason,
                    ) from None
                raise FailedPrecondition(
                    f"the namespace's schema cannot check this change: {exc}",
                    [PreconditionViolation(exc.reason, namespace_name(ns), str(exc))],
                    reason=exc.reason,
                ) from None
        return found

    @staticmethod
    def _raise_schema_violations(found: list[FieldViolation], what: str) -> None:
        if found:
            raise InvalidArgument(
                f"{what} would break the namespace's schema in {len(found)} place(s); first: "
                f"{found[0].field}: {found[0].description}",
                found,
                reason="SCHEMA_VIOLATION",
            )

    async def _check_write_against_schema(
        self, snap: Snapshot, namespace: models.Namespace, env: str, content: documents.Document
    ) -> None:
        """A write of `env` must keep valid every resolved document it changes."""
        if namespace.schema is None:
            return
        if env == BASE_ENVIRONMENT:
            # The base changes every environment's resolution: check them all.
            layers = {e: r.content for e, r in (await snap.environments()).items()}
            layers[env] = content
            base = content
        else:
            current_base = await snap.environment(BASE_ENVIRONMENT)
            layers, base = {env: content}, current_base.content if current_base else {}
        self._raise_schema_violations(
            self._schema_violations(snap.ns, namespace.schema, base, layers, proposed=False),
            f"this change to {env!r}",
        )

    # -- namespaces ---------------------------------------------------------------------

    async def create_namespace(
        self, ns: str, fields: models.Namespace, reason: str, actor: str
    ) -> models.Namespace:
        check_id(ns, "namespace_id")
        self._check_namespace_fields(fields, "namespace")

        async def plan(snap: Snapshot) -> Change:
            if await snap.namespace() is not None:
                raise AlreadyExists(
                    f"namespace {ns!r} already exists",
                    resource_type="Namespace",
                    resource_name=namespace_name(ns),
                )
            return Change(
                models.NAMESPACE_CREATED, namespace=replace(fields, id=ns, create_time_us=0), reason=reason
            )

        committed = await self.store.commit(ns, actor, plan)
        assert committed.namespace is not None
        return committed.namespace

    def _check_namespace_fields(self, fields: models.Namespace, prefix: str) -> None:
        check_text(fields.display_name, f"{prefix}.display_name", MAX_DISPLAY_NAME)
        check_text(fields.description, f"{prefix}.description", MAX_TEXT)
        check_labels(fields.labels, f"{prefix}.labels")
        if fields.schema is not None:
            self.check_document(fields.schema, f"{prefix}.schema")
            schema.check_schema(
                fields.schema, f"{prefix}.schema", max_document_depth=self.settings.config_max_document_depth
            )

    async def get_namespace(self, ns: str) -> models.Namespace:
        namespace = await self.store.namespace(ns)
        if namespace is None:
            raise _namespace_missing(ns)
        return namespace

    async def list_namespaces(self, size: int, token: str) -> tuple[list[models.Namespace], str]:
        limit = page_size(size)
        query = ("namespaces",)
        found = await self.store.list_namespaces(decode_token(token, query), limit + 1)
        page, more = found[:limit], len(found) > limit
        return page, encode_token(page[-1].id, query) if more else ""

    async def update_namespace(
        self, ns: str, changes: models.Namespace, mask: list[str], etag: str, reason: str, actor: str
    ) -> models.Namespace:
        unknown = [p for p in mask if p not in NAMESPACE_FIELDS]
        if unknown:
            raise InvalidArgument(
                f"update_mask: cannot update {unknown[0]!r}; updatable: {', '.join(NAMESPACE_FIELDS)}",
                [FieldViolation("update_mask", f"{p!r} is not updatable") for p in unknown],
            )
        self._check_namespace_fields(changes, "namespace")

        async def plan(snap: Snapshot) -> Change:
            current = await snap.namespace()
            if current is None:
                raise _namespace_missing(ns)
            etags.check(etag, current.etag, f"namespace {ns!r}")
            updated = replace(current, **{f: getattr(changes, f) for f in mask})
            if updated.schema is not None and "schema" in mask:
                layers = {e: r.content for e, r in (await snap.environments()).items()}
                base = layers.get(BASE_ENVIRONMENT, {})
                self._raise_schema_violations(
                    self._schema_violations(ns, updated.schema, base, layers, proposed=True), "the new schema"
                )
            return Change(models.NAMESPACE_UPDATED, namespace=updated, reason=reason)

        committed = await self.store.commit(ns, actor, plan)
        assert committed.namespace is not None
        return committed.namespace

    async def delete_namespace(self, ns: str, etag: str, force: bool, reason: str, actor: str) -> None:
        async def plan(snap: Snapshot) -> Change:
            current = await snap.namespace()
            if current is None:
                raise _namespace_missing(ns)
            etags.check(etag, current.etag, f"namespace {ns!r}")
            environments = tuple(await snap.environment_ids())
            if environments and not force:
                raise FailedPrecondition(
                    f"namespace {ns!r} still has {len(environments)} environment(s); "
                    "delete them or set `force`",
                    [
                        PreconditionViolation(
                            "HAS_ENVIRONMENTS", namespace_name(ns), f"{len(environments)} environments"
                        )
                    ],
                    reason="NAMESPACE_NOT_EMPTY",
                )
            return Change(models.NAMESPACE_DELETED, deleted_environments=environments, reason=reason)

        await self.store.commit(ns, actor, plan)

    # -- environments -------------------------------------------------------------------

    async def get_environment(self, ns: str, env: str, *, cached: bool = False) -> models.Environment:
        """Served from the read cache while the namespace has not changed since it was filled;
        `cached`: changed as far as this replica knows (READ_CONSISTENCY_CACHED)."""
        hit = self._environments.get((ns, env), await self.store.current_revision(ns, cached=cached))
        if hit is not None:
            return hit
        record, revision = await self.store.environment(ns, env)
        if record is None:
            raise (
                _environment_missing(ns, env)
                if await self.store.namespace_exists(ns)
                else _namespace_missing(ns)
            )
        self._environments.put((ns, env), revision, record)
        return record

    async def list_environments(self, ns: str, size: int, token: str) -> tuple[list[models.Environment], str]:
        limit = page_size(size)
        query = ("environments", ns)
        after = decode_token(token, query)
        if not await self.store.namespace_exists(ns):
            raise _namespace_missing(ns)
        found = await self.store.list_environments(ns, after, limit + 1)
        page, more = found[:limit], len(found) > limit
        return page, encode_token(page[-1].id, query) if more else ""

    async def _write_environment(
        self,
        ns: str,
        env: str,
        content: documents.Document,
        *,
        etag: str,
        allow_missing: bool,
        action: str | None,
        source_revision: int,
        reason: str,
        actor: str,
    ) -> models.Environment:
        async def plan(snap: Snapshot) -> Change:
            namespace = await snap.namespace()
            if namespace is None:
                raise _namespace_missing(ns)
            current = await snap.environment(env)
            if current is None and not allow_missing:
                raise _environment_missing(ns, env)
            if current is not None:
                etags.check(etag, current.etag, f"environment {env!r}")
            elif etag:
                raise etags.mismatch(etag, "", f"environment {env!r}")
            await self._check_write_against_schema(snap, namespace, env, content)
            chosen = action or (models.ENVIRONMENT_UPDATED if current else models.ENVIRONMENT_CREATED)
            return Change(
                chosen,
                environment=env,
                content=content,
                previous=current,
                source_revision=source_revision,
                reason=reason,
            )

        committed = await self.store.commit(ns, actor, plan)
        assert committed.environment is not None
        return committed.environment

    async def update_environment(
        self,
        ns: str,
        env: str,
        content: documents.Document,
        *,
        etag: str,
        allow_missing: bool,
        reason: str,
        actor: str,
    ) -> models.Environment:
        self.check_document(content, "environment.content")
        return await self._write_environment(
            ns,
            env,
            content,
            etag=etag,
            allow_missing=allow_missing,
            action=None,
            source_revision=0,
            reason=reason,
            actor=actor,
        )

    async def delete_environment(self, ns: str, env: str, etag: str, reason: str, actor: str) -> None:
        async def plan(snap: Snapshot) -> Change:
            if await snap.namespace() is None:
                raise _namespace_missing(ns)
            current = await snap.environment(env)
            if current is None:
                raise _environment_missing(ns, env)
            etags.check(etag, current.etag, f"environment {env!r}")
            if env == BASE_ENVIRONMENT:
                overlays = [e for e in await snap.environment_ids() if e != BASE_ENVIRONMENT]
                if overlays:
                    raise FailedPrecondition(
                        f"'default' is the base of {len(overlays)} environment(s); delete them first",
                        [
                            PreconditionViolation(
                                "HAS_OVERLAYS", environment_name(ns, env), ", ".join(overlays[:20])
                            )
                        ],
                        reason="BASE_IN_USE",
                    )
            return Change(models.ENVIRONMENT_DELETED, environment=env, previous=current, reason=reason)

        await self.store.commit(ns, actor, plan)

    async def resolve(self, ns: str, env: str, *, cached: bool = False) -> models.Resolved:
        """Served from the read cache while the namespace has not changed since it was filled;
        `cached`: changed as far as this replica knows (READ_CONSISTENCY_CACHED)."""
        hit = self._resolved.get((ns, env), await self.store.current_revision(ns, cached=cached))
        if hit is not None:
            return hit
        exists, base, own, revision = await self.store.layers(ns, env)
        if not exists:
            raise _namespace_missing(ns)
        if own is None:
            raise _environment_missing(ns, env)
        layers = (
            [(env, own.content)]
            if env == BASE_ENVIRONMENT or base is None
            else [(BASE_ENVIRONMENT, base.content), (env, own.content)]
        )
        content, sources = documents.resolve(layers)
        resolved = models.Resolved(ns, env, content, sources, revision)
        self._resolved.put((ns, env), revision, resolved)
        return resolved

    # -- revisions ----------------------------------------------------------------------

    async def list_revisions(
        self, ns: str, env: str, size: int, token: str
    ) -> tuple[list[models.Revision], str]:
        if env:
            check_id(env, "environment")
        limit = page_size(size)
        query = ("revisions", ns, env)
        cursor = decode_token(token, query)
        if cursor is not None and not cursor.isdigit():
            raise InvalidArgument.for_field("page_token", "is not a token this service issued")
        if not await self.store.namespace_exists(ns):
            raise _namespace_missing(ns)
        found = await self.store.list_revisions(ns, env, int(cursor) if cursor else None, limit + 1)
        page, more = found[:limit], len(found) > limit
        return page, encode_token(str(page[-1].revision), query) if more else ""

    async def get_revision(self, ns: str, revision: int) -> models.Revision:
        record = await self.store.revision(ns, revision)
        if record is None:
            if not await self.store.namespace_exists(ns):
                raise _namespace_missing(ns)
            raise NotFound(
                f"revision {revision} does not exist in namespace {ns!r}",
                resource_type="Revision",
                resource_name=revision_name(ns, revision),
            )
        return record

    async def _latest(self, ns: str) -> int:
        namespace = await self.store.namespace(ns)
        if namespace is None:
            raise _namespace_missing(ns)
        return namespace.revision

    def _check_revision(self, revision: int, latest: int, field: str) -> None:
        if revision < 1 or revision > latest:
            raise InvalidArgument.for_field(
                field, f"{revision} is not between 1 and the latest revision, {latest}"
            )

    async def _content_at(self, ns: str, env: str, revision: int) -> documents.Document | None:
        record = await self.store.environment_at(ns, env, revision)
        if record is None or record.action == models.ENVIRONMENT_DELETED:
            return None
        return record.content or {}

    async def diff(
        self, ns: str, env: str, base_revision: int, target_revision: int
    ) -> tuple[int, int, list[documents.Change]]:
        latest = await self._latest(ns)
        target_revision = target_revision or latest
        self._check_revision(base_revision, latest, "base_revision")
        self._check_revision(target_revision, latest, "target_revision")
        if await self.store.environment_at(ns, env, latest) is None:
            raise _environment_missing(ns, env)
        base = await self._content_at(ns, env, base_revision) or {}
        target = await self._content_at(ns, env, target_revision) or {}
        return base_revision, target_revision, documents.diff(base, target)

    async def rollback(
        self, ns: str, env: str, revision: int, etag: str, reason: str, actor: str
    ) -> models.Environment:
        self._check_revision(revision, await self._latest(ns), "revision")
        content = await self._content_at(ns, env, revision)
        if content is None:
            raise FailedPrecondition(
                f"environment {env!r} did not exist at revision {revision}; nothing to roll back to",
                [PreconditionViolation("NO_DOCUMENT_AT_REVISION", environment_name(ns, env), str(revision))],
                reason="NO_DOCUMENT_AT_REVISION",
            )
        return await self._write_environment(
            ns,
            env,
            content,
            etag=etag,
            allow_missing=True,
            action=models.ENVIRONMENT_ROLLED_BACK,
            source_revision=revision,
            reason=reason,
            actor=actor,
        )
