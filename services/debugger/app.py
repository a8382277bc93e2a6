"""The debugger service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

import datetime

from grpc import aio

from devmesh.debugger.v1 import debugger_pb2, debugger_pb2_grpc, remediation_pb2, remediation_pb2_grpc
from services.debugger.diagnosis_store import DiagnosisStore
from services.debugger.domain import Debugger
from services.debugger.explainers import Explainer, OfflineExplainer
from services.debugger.model_explainers import ModelExplainer, Provider
from services.debugger.remediation_actions import DryRunKubernetes, Executor
from services.debugger.remediation_config_client import ConfigRollback
from services.debugger.remediation_execution import Execution
from services.debugger.remediation_notifications import RemediationAudit, RemediationWebhooks
from services.debugger.remediation_policy import Policy
from services.debugger.remediation_secrets_client import SecretActions
from services.debugger.remediation_servicer import RemediationServicer
from services.debugger.remediation_signing_client import SigningKeysFromSecrets
from services.debugger.remediation_store import RemediationStore
from services.debugger.remediation_subscription_store import SubscriptionStore
from services.debugger.remediation_subscriptions import Subscriptions
from services.debugger.remediations import Remediations
from services.debugger.secrets_client import ApiKeyFromSecrets
from services.debugger.servicer import DebuggerServicer
from services.debugger.settings import DebuggerSettings
from services.debugger.template_store import TemplateStore
from services.runtime import notifications
from services.runtime.audit import AuditLog
from services.runtime.identity import roles
from services.runtime.server import Runtime, ServiceBinding
from services.runtime.settings import SettingsError
from services.runtime.spec import ServiceSpec

_SERVICE = debugger_pb2.DESCRIPTOR.services_by_name["DebuggerService"].full_name
_REMEDIATION_SERVICE = remediation_pb2.DESCRIPTOR.services_by_name["RemediationService"].full_name
_READS = (
    "debugger.diagnoses.get",
    "debugger.diagnoses.list",
    "debugger.templates.list",
    "debugger.remediations.get",
    "debugger.remediations.list",
    "debugger.remediations.watch",
)
# Webhook subscriptions are read by operators only: a URI may carry a token (Slack's do).


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


def policy(settings: DebuggerSettings) -> Policy:
    """The remediation policy the settings describe."""
    return Policy(
        default_threshold=settings.debugger_remediation_threshold,
        thresholds=dict(settings.debugger_remediation_thresholds),
        production_environments=settings.debugger_production_environments,
        approval_ttl_s=settings.debugger_approval_ttl,
        automatic_per_target=settings.debugger_automatic_per_target,
        automatic_window_s=settings.debugger_automatic_window,
    )


def _now_iso() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def executors(runtime: Runtime) -> list[Executor]:
    """The executors of remediation actions: Kubernetes in dry run (no cluster here), config
    rollbacks and secret rotations when those services are peers. Pipeline actions and secret
    promotion have none yet."""
    found: list[Executor] = [DryRunKubernetes(_now_iso)]
    config = runtime.peer_channel("config")
    if config is not None:
        found.append(ConfigRollback(config))
    secrets = runtime.peer_channel("secrets")
    if secrets is not None:
        found.append(SecretActions(secrets))
    return found


def remediation_webhooks(runtime: Runtime, settings: DebuggerSettings) -> RemediationWebhooks:
    """Remediation events to the webhook subscriptions, signed with keys the secrets service keeps."""
    for moved in (
        "DEVMESH_DEBUGGER_REMEDIATION_WEBHOOK_URL",
        "DEVMESH_DEBUGGER_REMEDIATION_WEBHOOK_SECRET_FILE",
    ):
        if runtime.environ.get(moved):
            # Silently dropping a configured webhook would lose its events: say where it went.
            raise SettingsError(
                f"{moved} is gone: remediation webhooks are webhook subscriptions now "
                "(POST /v1/webhookSubscriptions with a uri and a signing_secret in the secrets service)"
            )
    secrets = runtime.peer_channel("secrets")
    keys = SigningKeysFromSecrets(secrets) if secrets is not None else None
    subscriptions = Subscriptions(SubscriptionStore(runtime.redis, runtime.durable), keys)
    notifier = notifications.Notifier(
        runtime.redis,
        runtime.durable,
        "devmesh:debugger:notify:",
        max_attempts=settings.debugger_webhook_max_attempts,
        first_backoff=settings.debugger_webhook_first_backoff,
    )
    return RemediationWebhooks(notifier, subscriptions)


def build(runtime: Runtime, settings: DebuggerSettings) -> ServiceBinding:
    diagnoses = DiagnosisStore(
        runtime.redis, runtime.durable, retention_s=settings.debugger_diagnosis_retention
    )
    debugger = Debugger(
        TemplateStore(runtime.redis, max_templates=settings.debugger_max_templates),
        diagnoses,
        explainer(runtime, settings),
        max_log_bytes=settings.debugger_max_log_bytes,
    )
    # AnalyzeJob is deliberately not built (the spec's `unimplemented`): the generated base
    # declares it abstract, and without it grpc answers UNIMPLEMENTED.
    servicer = DebuggerServicer(debugger)  # type: ignore[abstract]
    webhooks = remediation_webhooks(runtime, settings)
    audit = RemediationAudit(AuditLog(runtime.redis, retention=runtime.settings.audit_retention))
    announcers = [audit.announce, webhooks.announce]
    store = RemediationStore(runtime.redis, runtime.durable, announcers)
    remediations = Remediations(store, diagnoses, policy(settings), Execution(store, executors(runtime)))
    remediation_servicer = RemediationServicer(remediations, webhooks.subscriptions)

    def register(server: aio.Server) -> None:
        debugger_pb2_grpc.add_DebuggerServiceServicer_to_server(servicer, server)
        remediation_pb2_grpc.add_RemediationServiceServicer_to_server(remediation_servicer, server)

    async def start() -> None:
        await webhooks.notifier.start()

    async def stop() -> None:
        remediations.close()
        await webhooks.notifier.stop()

    return ServiceBinding(register=register, dependencies=[runtime.redis_dependency], start=start, stop=stop)


SPEC = ServiceSpec(
    name="debugger",
    summary="diagnoses failed CI logs and pods: category, root-cause lines, signature, explanation; "
    "mines log templates",
    settings=DebuggerSettings,
    build=build,
    servicers={_SERVICE: DebuggerServicer, _REMEDIATION_SERVICE: RemediationServicer},
    grants={
        roles.OPERATOR: ("debugger.*",),
        roles.VIEWER: _READS,
        # The pipeline and other services send logs and read what was found.
        roles.SERVICE: (
            *_READS,
            "debugger.diagnoses.analyze",
            "debugger.templates.parse",
            "debugger.jobs.analyze",
            # A service that sees a failure may propose its fix; people approve it.
            "debugger.remediations.propose",
        ),
    },
    read_verbs=frozenset({"get", "list", "watch"}),
    # AnalyzeJob reads runs from the pipeline service, which does not record them yet (pipeline
    # II); the pipeline becomes a peer when it joins the catalog.
    unimplemented=frozenset({f"/{_SERVICE}/AnalyzeJob"}),
    # The model provider's API key, when one is configured, comes from the secrets service.
    # Remediations roll config environments back through the config service; webhook
    # subscriptions' signing keys come from the secrets service.
    peers=("secrets", "config"),
    commands="services.debugger.cli",
)
