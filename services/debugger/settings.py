"""Settings of the debugger service (`DEVMESH_DEBUGGER_*`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import (
    parse_bool,
    parse_choice,
    parse_names,
    parse_positive_float,
    parse_positive_int,
    setting,
)


def parse_threshold(raw: str) -> float:
    """A risk threshold, 0 to 1."""
    value = float(raw)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a number from 0 to 1")
    return value


def parse_thresholds(raw: str) -> tuple[tuple[str, float], ...]:
    """`env=0.1,staging=0.5` -> ((env, 0.1), (staging, 0.5))."""
    pairs = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        environment, sep, value = item.partition("=")
        if not sep or not environment.strip():
            raise ValueError(f"{item!r} is not environment=threshold")
        pairs.append((environment.strip(), parse_threshold(value)))
    return tuple(pairs)


@dataclass(frozen=True)
class DebuggerSettings:
    debugger_max_log_bytes: int = setting(
        256 * 1024 * 1024, "Largest log StreamAnalyzeLog accepts, in bytes.", parse=parse_positive_int
    )
    debugger_max_templates: int = setting(
        20000,
        "Templates one template set holds at most; lines that need more get none.",
        parse=parse_positive_int,
    )
    debugger_diagnosis_retention: int = setting(
        30 * 24 * 3600, "Seconds a diagnosis is kept.", parse=parse_positive_int
    )
    debugger_explainer: str = setting(
        "offline",
        "Who writes explanations: offline (deterministic, no model), openai (an OpenAI-compatible "
        "chat-completions server) or ollama (Ollama's native API).",
        parse=parse_choice("offline", "openai", "ollama"),
    )
    debugger_model_url: str = setting(
        "", "Base URL of the model server (http://127.0.0.1:8080 for llama.cpp's server)."
    )
    debugger_model_name: str = setting("", "The model to ask for.")
    debugger_model_timeout: float = setting(
        20.0,
        "Seconds a model may take before the offline explainer answers instead.",
        parse=parse_positive_float,
    )
    debugger_model_api_key_secret: str = setting(
        "", "The secret (secrets/{id}) holding the provider's API key; empty: none is sent."
    )
    debugger_explanation_cache_ttl: int = setting(
        7 * 24 * 3600, "Seconds a model's explanation stays cached.", parse=parse_positive_int
    )
    debugger_remediation_threshold: float = setting(
        0.3,
        "Risk under which a remediation is automatic (no approval), unless its environment has its own.",
        parse=parse_threshold,
    )
    debugger_remediation_thresholds: tuple[tuple[str, float], ...] = setting(
        (),
        "Per-environment risk thresholds: `env=0.1,staging=0.5`.",
        parse=parse_thresholds,
        shown="",
    )
    debugger_production_environments: frozenset[str] = setting(
        frozenset({"prod", "production"}),
        "Environments (config environment ids, Kubernetes namespaces) that count as production: "
        "risk weighs more and two distinct approvers are needed.",
        parse=parse_names,
        shown="prod,production",
    )
    debugger_approval_ttl: int = setting(
        3600, "Seconds an approval of a remediation counts.", parse=parse_positive_int
    )
    debugger_automatic_per_target: int = setting(
        3,
        "Automatic remediations one target gets per window; more escalate to approval.",
        parse=parse_positive_int,
    )
    debugger_automatic_window: int = setting(
        3600, "Seconds of the automatic-remediation window per target.", parse=parse_positive_int
    )
    debugger_webhook_max_attempts: int = setting(
        8,
        "Tries of one remediation webhook POST (1 s, 2 s, 4 s... apart, at most 5 minutes) before "
        "it is kept as a dead letter.",
        parse=parse_positive_int,
    )
    debugger_webhook_first_backoff: float = setting(
        1.0,
        "Seconds before the first retry of a failed remediation webhook POST.",
        parse=parse_positive_float,
    )
    debugger_follow_failures: bool = setting(
        True,
        "Diagnose every failed pipeline job attempt on its own (from the pipeline's failures "
        "stream), once across replicas; needs the pipeline in DEVMESH_PEERS.",
        parse=parse_bool,
    )
    debugger_failures_claim_idle: float = setting(
        30.0,
        "Seconds after which a failure another replica took and did not finish (it died, or the "
        "pipeline was down) is taken over.",
        parse=parse_positive_float,
    )
    debugger_remediation_executor: bool = setting(
        True,
        "Execute automatic (and approved execute-on-approval) remediations in the background, and "
        "resume the ones a stopped replica left; off: only ExecuteRemediation executes.",
        parse=parse_bool,
    )
    debugger_remediation_executor_interval: float = setting(
        2.0,
        "Seconds between the background executor's looks for remediations to execute or resume.",
        parse=parse_positive_float,
    )
    debugger_remediation_lease: float = setting(
        30.0,
        "Seconds a replica's lease on a remediation it executes lasts unrenewed: after it dies, "
        "another replica resumes the remediation this much later.",
        parse=parse_positive_float,
    )
    debugger_remediation_verify_window: float = setting(
        1800.0,
        "Seconds a pipeline re-run or cancellation may take before its verification fails.",
        parse=parse_positive_float,
    )
    debugger_remediation_pause_after_execute: str = setting(
        "",
        "Tests only: a file the executor creates once an action's execute is recorded, after which "
        "it waits forever (a test kills the replica there); empty: no pause.",
    )
