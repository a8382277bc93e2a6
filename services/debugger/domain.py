"""The debugger's use cases: analyse a log (whole or streamed) or a pod, mine lines, list
templates, read diagnoses, take feedback. No gRPC here: the servicer converts."""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from services.debugger.diagnosis import Context, Diagnosis, diagnose
from services.debugger.diagnosis_hooks import LOG, POD, DiagnosisHooks, NewDiagnosis
from services.debugger.diagnosis_store import DiagnosisStore
from services.debugger.explainers import Explainer
from services.debugger.log_reader import LogReader
from services.debugger.pod_collector import PodDiagnostics
from services.debugger.pod_state import diagnose_pod
from services.debugger.secret_masks import SecretMasker, mask_text
from services.debugger.taxonomy import TRANSIENT, Category, remediations
from services.debugger.template_miner import Template, TemplateMiner
from services.debugger.template_store import TemplateStore
from services.runtime.errors import InvalidArgument, ResourceExhausted
from services.runtime.resource_names import ResourceName

DIAGNOSIS = ResourceName("diagnoses/{diagnosis}")
TEMPLATE_SET = ResourceName("templateSets/{template_set}")
TEMPLATE = ResourceName("templateSets/{template_set}/templates/{template}")
DEFAULT_TEMPLATE_SET = "default"
MAX_PARSE_LINES = 10_000
MAX_PARSE_LINE_CHARS = 65_536
# Reading is CPU work on the event loop: a log is read a slice at a time, other calls (health
# checks above all) going in between, so that a 50 MiB upload never stalls the server.
SLICE = 64 * 1024


def _now_us() -> int:
    return time.time_ns() // 1000


def template_name(template_set: str, template_id: str) -> str:
    """A template's resource name (ids are hex, so they take a leading `t` to be AIP ids)."""
    return TEMPLATE.format(template_set, f"t{template_id}")


def new_diagnosis_id() -> str:
    return "d" + secrets.token_hex(10)


@dataclass(frozen=True)
class LogOptions:
    """How a log is to be analysed."""

    kind: str
    context: Context
    template_set: str
    announce: bool = True  # tell the hooks (a job's analysis tells them itself, knowing more)


class LogAnalysis:
    """One log being analysed: fed chunk by chunk, then finished into a stored diagnosis."""

    def __init__(self, debugger: Debugger, options: LogOptions, reader: LogReader, max_bytes: int) -> None:
        self._debugger = debugger
        self._options = options
        self._reader = reader
        self._max_bytes = max_bytes
        self.received = 0

    async def feed(self, chunk: bytes) -> None:
        """The next bytes; RESOURCE_EXHAUSTED past the limit."""
        self.received += len(chunk)
        if self.received > self._max_bytes:
            raise ResourceExhausted(
                f"the log is larger than {self._max_bytes} bytes; send its last part",
                reason="LOG_TOO_LARGE",
            )
        for start in range(0, len(chunk), SLICE):
            self._reader.feed(chunk[start : start + SLICE])
            await asyncio.sleep(0)

    async def feed_text(self, text: str) -> None:
        """The next characters."""
        for start in range(0, len(text), SLICE):
            self._reader.feed_text(text[start : start + SLICE])
            await asyncio.sleep(0)

    async def finish(
        self,
        *,
        diagnosis_id: str = "",
        extra_evidence: list[str] | None = None,
        refine: Callable[[Diagnosis], Diagnosis] | None = None,
    ) -> Diagnosis:
        """The diagnosis of what was fed, stored. `extra_evidence`: lines that are not in the
        log but count for the category; `refine`: a last change by what the caller knows (a
        job's facts), before feedback on the signature applies."""
        read = self._reader.finish()
        if read.line_count == 0:
            raise InvalidArgument.for_field("text", "the log is empty", reason="EMPTY_LOG")
        options = self._options
        diagnosis = diagnose(
            read,
            diagnosis_id=diagnosis_id or new_diagnosis_id(),
            kind=options.kind,
            context=options.context,
            template_set=TEMPLATE_SET.format(options.template_set),
            now_us=_now_us(),
            extra_evidence=extra_evidence,
        )
        if refine is not None:
            diagnosis = refine(diagnosis)
        diagnosis = await self._debugger.complete(diagnosis, options.template_set, self._reader.miner)
        if options.announce:
            await self._debugger.hooks.fire(NewDiagnosis(diagnosis, LOG))
        return diagnosis


class Debugger:
    """The debugger service's domain."""

    def __init__(
        self,
        templates: TemplateStore,
        diagnoses: DiagnosisStore,
        explainer: Explainer,
        *,
        max_log_bytes: int,
        hooks: DiagnosisHooks | None = None,
    ) -> None:
        self.templates = templates
        self.diagnoses = diagnoses
        self.explainer = explainer
        self.max_log_bytes = max_log_bytes
        self.hooks = hooks or DiagnosisHooks(None)

    def template_set_id(self, name: str, field: str = "template_set") -> str:
        """The id of a template set name (`templateSets/{id}`; empty: the default set)."""
        if not name:
            return DEFAULT_TEMPLATE_SET
        return TEMPLATE_SET.parse(name, field)[0]

    async def start(self, options: LogOptions) -> LogAnalysis:
        """A new analysis of a log that will be fed in chunks."""
        miner = await self.templates.miner(options.template_set)
        return LogAnalysis(self, options, LogReader(miner, now_us=_now_us()), self.max_log_bytes)

    async def analyze_text(self, text: str, options: LogOptions) -> Diagnosis:
        """The diagnosis of a log sent whole."""
        analysis = await self.start(options)
        await analysis.feed_text(text)
        return await analysis.finish()

    async def complete(self, diagnosis: Diagnosis, template_set: str, miner: TemplateMiner) -> Diagnosis:
        """Save what `miner` (the set's) learnt; apply feedback, explain, store: the last steps
        of every analysis."""
        await self.templates.save(template_set, miner)
        feedback = await self.diagnoses.feedback(diagnosis.signature)
        if feedback is not None:
            category = Category(feedback["category"])
            diagnosis = replace(
                diagnosis,
                category=category,
                confidence=max(diagnosis.confidence, 0.9),
                transient=category in TRANSIENT,
                remediations=remediations(category),
                from_feedback=True,
            )
        explained = await self.explainer.explain(diagnosis)
        diagnosis = replace(
            diagnosis,
            explanation=explained.text,
            explanation_provider=explained.provider,
            explanation_model=explained.model,
            explanation_cached=explained.cached,
            explanation_fallback=explained.fallback,
        )
        await self.diagnoses.save(diagnosis)
        return diagnosis

    async def analyze_pod(self, diagnostics: PodDiagnostics) -> Diagnosis:
        """The diagnosis of a pod (from a PodCollector: uploaded, for now): its state decides the
        category when it can; the previous and the current container's logs (in that order)
        give the root-cause lines."""
        template_set = DEFAULT_TEMPLATE_SET
        miner = await self.templates.miner(template_set)
        diagnosis = diagnose_pod(
            miner,
            diagnostics.pod,
            diagnostics.events,
            current_log=diagnostics.current_log,
            previous_log=diagnostics.previous_log,
            container=diagnostics.container,
            diagnosis_id=new_diagnosis_id(),
            template_set=TEMPLATE_SET.format(template_set),
            now_us=_now_us(),
        )
        diagnosis = await self.complete(diagnosis, template_set, miner)
        await self.hooks.fire(NewDiagnosis(diagnosis, POD))
        return diagnosis

    async def parse(self, template_set: str, lines: Sequence[str]) -> tuple[list[Template | None], int]:
        """Each line's template (None: the set is full), and how many lines got none."""
        if len(lines) > MAX_PARSE_LINES:
            raise InvalidArgument.for_field(
                "lines", f"at most {MAX_PARSE_LINES} lines per call, not {len(lines)}"
            )
        for index, line in enumerate(lines):
            if len(line) > MAX_PARSE_LINE_CHARS:
                raise InvalidArgument.for_field(
                    f"lines[{index}]", f"longer than {MAX_PARSE_LINE_CHARS} characters"
                )
        miner = await self.templates.miner(template_set)
        masker = SecretMasker()
        now = _now_us()
        found: list[Template | None] = []
        for masked in masker.lines(lines):
            found.append(miner.add(masked, now_us=now, example=masked))
        await self.templates.save(template_set, miner)
        resolved = [miner.resolve(t.id) if t is not None else None for t in found]
        return resolved, sum(1 for t in resolved if t is None)

    async def feedback(
        self, diagnosis_id: str, category: Category, lines: list[tuple[int, int]], comment: str, author: str
    ) -> dict[str, Any]:
        """Record the right category (and lines) for a diagnosis's signature."""
        diagnosis = await self.diagnoses.get(diagnosis_id)
        for index, (start, end) in enumerate(lines):
            if not 1 <= start <= end <= max(diagnosis.line_count, 1):
                raise InvalidArgument.for_field(
                    f"root_cause_lines[{index}]",
                    f"must lie within lines 1-{diagnosis.line_count}, start <= end",
                )
        record = {
            "diagnosis": DIAGNOSIS.format(diagnosis_id),
            "signature": diagnosis.signature,
            "category": category.value,
            "root_cause_lines": [list(r) for r in lines],
            "comment": mask_text(comment[:2000]),
            "author": author,
            "create_time_us": _now_us(),
        }
        await self.diagnoses.record_feedback(diagnosis.signature, record)
        return record
