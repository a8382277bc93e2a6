"""The debugger service as the runtime hosts it: its spec, and how to build it."""

from __future__ import annotations

import asyncio
import datetime
import os
import pathlib
import socket
import uuid
from collections.abc import Awaitable, Callable

from grpc import aio

from devmesh.debugger.v1 import debugger_pb2, debugger_pb2_grpc, remediation_pb2, remediation_pb2_grpc
from services.debugger.diagnosis_hooks import JOB, DiagnosisHooks, NewDiagnosis
from services.debugger.diagnosis_store import DiagnosisStore
from services.debugger.domain import Debugger
from services.debugger.explainers import Explainer, OfflineExplainer
from services.debugger.failure_follower import FailureFollower
from services.debugger.jobs import JobAnalyzer
from services.debugger.model_explainers import ModelExplainer, Provider
from services.debugger.pipeline_client import PipelineJobs
from services.debugger.remediation import Remediation
from services.debugger.remediation_actions import DryRunKubernetes, Executor
from services.debugger.remediation_config_client import ConfigRollback
from services.debugger.remediation_execution import Execution
from services.debugger.remediation_executor import BackgroundExecutor
from services.debugger.remediation_notifications import RemediationAudit, RemediationWebhooks
from services.debugger.remediation_pipeline_client import PipelineActions
from services.debugger.remediation_policies import RemediationPolicies, RemediationTriggers
from services.debugger.remediation_policy import Policy
from services.debugger.remediation_secrets_client import SecretActions, SecretPromotion
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
    "debugger.remediationpolicies.get",
    "debugger.remediationpolicies.list",
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


def executors(runtime: Runtime, settings: DebuggerSettings) -> list[Executor]:
    """The executors of remediation actions: Kubernetes in dry run (no cluster here), config
    rollbacks, secret rotations, promotions and disables, and pipeline re-runs when those
    services are peers."""
    found: list[Executor] = [DryRunKubernetes(_now_iso)]
    pipeline = runtime.peer_channel("pipeline")
    if pipeline is not None:
        found.append(PipelineActions(pipeline, verify_window_s=settings.debugger_remediation_verify_window))
    config = runtime.peer_channel("config")
    if config is not None:
        found.append(ConfigRollback(config))
    secrets = runtime.peer_channel("secrets")
    if secrets is not None:
        found.extend((SecretActions(secrets), SecretPromotion(secrets)))
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


def pause_after_execute(marker: str) -> Callable[[Remediation, int], Awaitable[None]] | None:
    """The test hook DEVMESH_DEBUGGER_REMEDIATION_PAUSE_AFTER_EXECUTE names: once an action's
    execute is recorded, name it in the marker file and wait forever (the test kills the replica)."""
    if not marker:
        return None

    def note(line: str) -> None:
        with pathlib.Path(marker).open("a") as file:
            file.write(line)

    async def pause(remediation: Remediation, index: int) -> None:
        await asyncio.to_thread(note, f"remediations/{remediation.id} action {index}\n")
        await asyncio.Event().wait()

    return pause


def _proposing(triggers: RemediationTriggers) -> Callable[[NewDiagnosis], Awaitable[None]]:
    """The remediation trigger as a diagnosis hook: every new diagnosis of a pipeline job (an
    AnalyzeLog naming the job, or the attempt's own diagnosis) may propose a remediation; a
    fresh re-analysis of an attempt already diagnosed does not propose a second one."""

    async def propose(new: NewDiagnosis) -> None:
        if new.source == JOB and not new.first_of_attempt:
            return
        await triggers.propose_for_diagnosis(new.diagnosis)

    return propose


def execution(runtime: Runtime, settings: DebuggerSettings, store: RemediationStore) -> Execution:
    """How this replica executes remediations (its lease time, its name in their histories)."""
    return Execution(
        store,
        executors(runtime, settings),
        lease_ttl_s=settings.debugger_remediation_lease,
        replica=f"executor/{socket.gethostname()}-{os.getpid()}",
        after_execute=pause_after_execute(settings.debugger_remediation_pause_after_execute),
    )


def build(runtime: Runtime, settings: DebuggerSettings) -> ServiceBinding:
    diagnoses = DiagnosisStore(
        runtime.redis, runtime.durable, retention_s=settings.debugger_diagnosis_retention
    )
    # Code that reacts to new diagnoses (remediation triggers) subscribes here.
    hooks = DiagnosisHooks(runtime.redis)
    debugger = Debugger(
        TemplateStore(runtime.redis, max_templates=settings.debugger_max_templates),
        diagnoses,
        explainer(runtime, settings),
        max_log_bytes=settings.debugger_max_log_bytes,
        hooks=hooks,
    )
    pipeline = runtime.peer_channel("pipeline")
    jobs = JobAnalyzer(debugger, PipelineJobs(pipeline)) if pipeline is not None else None
    # Without the pipeline there is nothing to follow: AnalyzeJob says so (FAILED_PRECONDITION).
    follower = (
        FailureFollower(
            runtime.redis,
            jobs,
            f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
            claim_idle_s=settings.debugger_failures_claim_idle,
        )
        if jobs is not None and settings.debugger_follow_failures
        else None
    )
    servicer = DebuggerServicer(debugger, jobs)
    webhooks = remediation_webhooks(runtime, settings)
    audit = RemediationAudit(AuditLog(runtime.redis, retention=runtime.settings.audit_retention))
    announcers = [audit.announce, webhooks.announce]
    store = RemediationStore(runtime.redis, runtime.durable, announcers)
    executing = execution(runtime, settings, store)
    remediations = Remediations(store, diagnoses, policy(settings), executing)
    background = BackgroundExecutor(
        store, executing, interval_s=settings.debugger_remediation_executor_interval
    )
    if settings.debugger_remediation_executor:
        remediations.approved = background.wake
    policies = RemediationPolicies(runtime.redis, runtime.durable)
    # The trigger: every stored diagnosis goes to the remediation policies, which may propose.
    hooks.subscribe(_proposing(RemediationTriggers(policies, remediations)))
    remediation_servicer = RemediationServicer(remediations, policies, webhooks.subscriptions)

    def register(server: aio.Server) -> None:
        debugger_pb2_grpc.add_DebuggerServiceServicer_to_server(servicer, server)
        remediation_pb2_grpc.add_RemediationServiceServicer_to_server(remediation_servicer, server)

    async def start() -> None:
        await webhooks.notifier.start()
        if follower is not None:
            await follower.start()
        if settings.debugger_remediation_executor:
            await background.start()

    async def stop() -> None:
        if follower is not None:
            await follower.stop()
        remediations.close()
        await background.stop()
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
    # The model provider's API key, when one is configured, comes from the secrets service.
    # Remediations roll config environments back through the config service and re-run or
    # cancel runs through the pipeline service (as the debugger's service identity). AnalyzeJob
    # and the automatic diagnosis of failed jobs read runs and logs from the pipeline service.
    # Webhook subscriptions' signing keys come from the secrets service.
    peers=("secrets", "config", "pipeline"),
    commands="services.debugger.cli",
)
