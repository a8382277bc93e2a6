"""The debugger service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

from grpc import aio

from devmesh.debugger.v1 import debugger_pb2, debugger_pb2_grpc
from services.debugger.diagnosis_store import DiagnosisStore
from services.debugger.domain import Debugger
from services.debugger.explainers import Explainer, OfflineExplainer
from services.debugger.model_explainers import ModelExplainer, Provider
from services.debugger.secrets_client import ApiKeyFromSecrets
from services.debugger.servicer import DebuggerServicer
from services.debugger.settings import DebuggerSettings
from services.debugger.template_store import TemplateStore
from services.runtime.identity import roles
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.settings import SettingsError
from services.runtime.spec import ServiceSpec

_SERVICE = debugger_pb2.DESCRIPTOR.services_by_name["DebuggerService"].full_name
_READS = ("debugger.diagnoses.get", "debugger.diagnoses.list", "debugger.templates.list")


def explainer(runtime: Runtime, settings: DebuggerSettings) -> Explainer:
    """The configured explainer (a model's, with the offline one as fallback), or the offline one."""
    if settings.debugger_explainer == "offline":
        return OfflineExplainer()
    if not settings.debugger_model_url or not settings.debugger_model_name:
        raise SettingsError(
            f"DEVMESH_DEBUGGER_EXPLAINER={settings.debugger_explainer} needs DEVMESH_DEBUGGER_MODEL_URL "
            "and DEVMESH_DEBUGGER_MODEL_NAME"
        )
    api_key = None
    if settings.debugger_model_api_key_secret:
        secrets = runtime.peer_channel("secrets")
        if secrets is None:
            raise SettingsError(
                "DEVMESH_DEBUGGER_MODEL_API_KEY_SECRET needs the secrets service in DEVMESH_PEERS"
            )
        api_key = ApiKeyFromSecrets(secrets, settings.debugger_model_api_key_secret)
    provider = Provider(
        settings.debugger_explainer,
        settings.debugger_model_url,
        settings.debugger_model_name,
        settings.debugger_model_timeout,
        api_key,
    )
    return ModelExplainer(provider, runtime.redis, cache_ttl_s=settings.debugger_explanation_cache_ttl)


def build(runtime: Runtime, settings: DebuggerSettings) -> ServiceBinding:
    debugger = Debugger(
        TemplateStore(runtime.redis, max_templates=settings.debugger_max_templates),
        DiagnosisStore(runtime.redis, runtime.durable, retention_s=settings.debugger_diagnosis_retention),
        explainer(runtime, settings),
        max_log_bytes=settings.debugger_max_log_bytes,
    )
    # AnalyzeJob is deliberately not built (the spec's `unimplemented`): the generated base
    # declares it abstract, and without it grpc answers UNIMPLEMENTED.
    servicer = DebuggerServicer(debugger)  # type: ignore[abstract]

    def register(server: aio.Server) -> None:
        debugger_pb2_grpc.add_DebuggerServiceServicer_to_server(servicer, server)

    return ServiceBinding(register=register, dependencies=[runtime.redis_dependency])


SPEC = ServiceSpec(
    name="debugger",
    summary="diagnoses failed CI logs and pods: category, root-cause lines, signature, explanation; "
    "mines log templates",
    settings=DebuggerSettings,
    build=build,
    servicers={_SERVICE: DebuggerServicer},
    grants={
        roles.OPERATOR: ("debugger.*",),
        roles.VIEWER: _READS,
        # The pipeline and other services send logs and read what was found.
        roles.SERVICE: (
            *_READS,
            "debugger.diagnoses.analyze",
            "debugger.templates.parse",
            "debugger.jobs.analyze",
        ),
    },
    read_verbs=frozenset({"get", "list"}),
    # AnalyzeJob reads runs from the pipeline service, which does not record them yet (pipeline
    # II); the pipeline becomes a peer when it joins the catalog.
    unimplemented=frozenset({f"/{_SERVICE}/AnalyzeJob"}),
    # The model provider's API key, when one is configured, comes from the secrets service.
    peers=("secrets",),
    commands="services.debugger.cli",
)
