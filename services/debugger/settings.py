"""Settings of the debugger service (`DEVMESH_DEBUGGER_*`)."""

from __future__ import annotations

from dataclasses import dataclass

from services.runtime.settings import parse_choice, parse_positive_float, parse_positive_int, setting


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
