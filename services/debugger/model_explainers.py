"""Explanations written by a model: an OpenAI-compatible chat-completions server (vLLM,
llama.cpp's server, Ollama's `/v1`, LM Studio, hosted APIs) or Ollama's native API.

What reaches the model is already masked of secrets (`secret_masks`), and before the request
the identifiers left in it (addresses, host names, e-mail addresses, UUIDs) are replaced by
numbered placeholders, which the answer gets back afterwards (k8sgpt does the same). Secrets
stay masked in the answer: no mask of a secret is ever reversed outside the service. Answers
are cached in Redis by provider, model, signature and a hash of the masked prompt, holding
placeholders, never the identifiers. A provider that fails, answers nonsense or takes longer
than `timeout` seconds leaves the explanation to the offline explainer (`fallback`).
One prompt per category (k8sgpt issue #842): what to look for differs by failure.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.debugger.diagnosis import Diagnosis
from services.debugger.explainers import Explained, OfflineExplainer, offline_text
from services.debugger.secret_masks import mask_text
from services.debugger.taxonomy import Category
from services.runtime.logging import get_logger
from services.runtime.redis_client import Redis

log = get_logger(__name__)

CACHE_PREFIX = "devmesh:debugger:explanations"
MAX_PROMPT_CHARS = 6000
MAX_ANSWER_CHARS = 4000

_IDENTIFIERS = re.compile(
    r"(?P<UUID>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<EMAIL>\b[\w.+-]+@[\w-]+(?:\.[\w-]+)+\b)"
    r"|(?P<IP>\b\d{1,3}(?:\.\d{1,3}){3}\b)"
    r"|(?P<HOST>\b(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?\.)+(?:com|net|org|io|dev|local|internal|svc|cluster)\b)"
)

_FOCUS: dict[Category, str] = {
    Category.DEPENDENCY_RESOLUTION: "which dependency failed to resolve and which version would fix it",
    Category.COMPILATION: "the compiler error, its file and line, and the likely code change",
    Category.TEST_FAILURE: "which test failed, the assertion, and whether the code or the test is wrong",
    Category.FLAKY_TEST: "why the test may be flaky (ordering, timing, shared state)",
    Category.LINT: "which rule the linter applied and how to satisfy it",
    Category.OUT_OF_MEMORY: "what used the memory and what limit to set",
    Category.CRASH_LOOP: "why the container exits at start, from its previous log",
    Category.IMAGE_PULL: "whether the image name, tag, registry or pull secret is wrong",
    Category.TIMEOUT: "what ran out of time and whether a retry or a longer limit helps",
    Category.NETWORK: "which endpoint failed and whether the failure is transient",
    Category.PERMISSION: "which credential was refused and what permission it lacks",
    Category.DISK_FULL: "what filled the disk and how to free or grow it",
    Category.CONFIGURATION: "which setting is missing or wrong",
    Category.WORKER_LOST: "why the worker went away and whether a rerun helps",
    Category.UNKNOWN: "the most likely reason the job failed",
}
_SYSTEM = (
    "You explain why a CI job or a Kubernetes pod failed, in at most four sentences, for the "
    "engineer who owns it. Cite line numbers. Values like [SECRET:kind] and <HOST_1> are "
    "masked; repeat them as they are."
)


class Masked:
    """Identifiers of one prompt replaced by numbered placeholders, and their way back."""

    def __init__(self) -> None:
        self._by_value: dict[str, str] = {}
        self._by_placeholder: dict[str, str] = {}

    def mask(self, text: str) -> str:
        def replace(match: re.Match[str]) -> str:
            value = match.group(0)
            found = self._by_value.get(value)
            if found is None:
                kind = match.lastgroup or "ID"
                found = f"<{kind}_{sum(1 for p in self._by_placeholder if p.startswith(f'<{kind}_')) + 1}>"
                self._by_value[value] = found
                self._by_placeholder[found] = value
            return found

        return _IDENTIFIERS.sub(replace, text)

    def unmask(self, text: str) -> str:
        for placeholder, value in self._by_placeholder.items():
            text = text.replace(placeholder, value)
        return text


def prompt(diagnosis: Diagnosis) -> str:
    """The user prompt for a diagnosis: its category's focus, the evidence, the masked lines."""
    lines = [
        f"Category: {diagnosis.category.value.lower().replace('_', ' ')}. Explain {_FOCUS[diagnosis.category]}.",
    ]
    if diagnosis.pod is not None:
        pod = diagnosis.pod
        lines.append(
            f"Pod state: container {pod.container} {pod.reason}; last termination {pod.last_termination_reason} "
            f"(exit code {pod.exit_code}); memory limit {pod.memory_limit or 'none'}; restarts {pod.restart_count}."
        )
        lines.extend(f"Event: {event}" for event in pod.events[-5:])
    for cause in diagnosis.root_causes[:3]:
        lines.append(f"Lines {cause.start_line}-{cause.end_line}:\n{cause.excerpt}")
    text = "\n".join(lines)
    return text[:MAX_PROMPT_CHARS]


@dataclass(frozen=True)
class Provider:
    """How to reach a model: `openai` (chat completions) or `ollama` (native API)."""

    kind: str
    url: str  # the server's base URL, e.g. http://127.0.0.1:8080
    model: str
    timeout: float
    api_key: Callable[[], Awaitable[str]] | None = None


def _request_body(provider: Provider, user: str) -> tuple[str, dict[str, object]]:
    messages = [{"role": "system", "content": _SYSTEM}, {"role": "user", "content": user}]
    if provider.kind == "ollama":
        return "/api/chat", {
            "model": provider.model,
            "messages": messages,
            "stream": False,
            "options": {"temperature": 0},
        }
    return "/v1/chat/completions", {
        "model": provider.model,
        "messages": messages,
        "temperature": 0,
        "max_tokens": 300,
    }


def _answer(provider: Provider, document: object) -> str:
    """The text of a provider's answer; ValueError when it has none."""
    if not isinstance(document, dict):
        raise ValueError("the answer is not a JSON object")
    if provider.kind == "ollama":
        content = (document.get("message") or {}).get("content")
    else:
        choices = document.get("choices") or [{}]
        content = ((choices[0] or {}).get("message") or {}).get("content")
    if not isinstance(content, str) or not content.strip():
        raise ValueError("the answer holds no text")
    return content.strip()[:MAX_ANSWER_CHARS]


def _post(url: str, body: bytes, headers: dict[str, str], timeout: float) -> bytes:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        data: bytes = response.read(1 << 20)
        return data


class ModelExplainer:
    """Explanations by a model, cached, with the offline explainer as fallback."""

    def __init__(self, provider: Provider, redis: Redis, *, cache_ttl_s: int) -> None:
        self.provider = provider
        self._redis = redis
        self._cache_ttl_s = cache_ttl_s
        self._offline = OfflineExplainer()

    def _cache_key(self, diagnosis: Diagnosis, masked_prompt: str) -> str:
        digest = hashlib.sha256(masked_prompt.encode()).hexdigest()[:16]
        model = hashlib.sha256(self.provider.model.encode()).hexdigest()[:12]
        return f"{CACHE_PREFIX}:{self.provider.kind}:{model}:{diagnosis.signature}:{digest}"

    async def explain(self, diagnosis: Diagnosis) -> Explained:
        identifiers = Masked()
        masked_prompt = identifiers.mask(mask_text(prompt(diagnosis)))
        key = self._cache_key(diagnosis, masked_prompt)
        cached = await self._redis.get(key)
        if cached is not None:
            return Explained(
                identifiers.unmask(cached.decode()), self.provider.kind, self.provider.model, cached=True
            )
        try:
            answer = await asyncio.wait_for(self._ask(masked_prompt), self.provider.timeout)
        except (TimeoutError, OSError, ValueError, urllib.error.URLError) as exc:
            log.warning("debugger.explainer.fallback", provider=self.provider.kind, error=type(exc).__name__)
            return Explained(offline_text(diagnosis), "offline", fallback=True)
        # A model repeats what it saw: the answer is masked again before anything keeps it.
        answer = mask_text(answer)
        await self._redis.set(key, answer, ex=self._cache_ttl_s)
        return Explained(identifiers.unmask(answer), self.provider.kind, self.provider.model)

    async def _ask(self, user: str) -> str:
        provider = self.provider
        path, body = _request_body(provider, user)
        headers = {"content-type": "application/json"}
        if provider.api_key is not None:
            headers["authorization"] = f"Bearer {await provider.api_key()}"
        raw = await asyncio.to_thread(
            _post, provider.url.rstrip("/") + path, json.dumps(body).encode(), headers, provider.timeout
        )
        return _answer(provider, json.loads(raw))
