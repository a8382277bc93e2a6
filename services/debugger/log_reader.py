"""A log read as it arrives, with bounded memory: lines are masked of secrets, mined, scored,
and only what a diagnosis needs is kept.

What is kept: the last TAIL_LINES lines (failures are reported late), fewer when their text
passes TAIL_CHARS (a log of long lines), and the EARLIER_LINES best-scoring lines before them,
each with its number in the log, and how often each template occurred. A 256 MiB log
therefore costs what a few thousand lines cost, plus its template set. A line longer than
MAX_LINE_CHARS is cut there (the rest of it is dropped), and a kept line keeps its first
KEPT_CHARS.
"""

from __future__ import annotations

import codecs
import heapq
from collections import Counter, deque
from dataclasses import dataclass

from services.debugger.log_masks import strip_ansi
from services.debugger.root_cause import line_score
from services.debugger.secret_masks import SecretMasker
from services.debugger.template_miner import Template, TemplateMiner

TAIL_LINES = 5000
EARLIER_LINES = 200
MAX_LINE_CHARS = 16384
KEPT_CHARS = 1024  # of a kept line: what an excerpt shows of it
# The tail's text: 5,000 lines of KEPT_CHARS would be 5 MiB, more than a streamed chunk.
TAIL_CHARS = 1 << 20


@dataclass(frozen=True, slots=True)  # thousands are kept per log: no __dict__ each
class KeptLine:
    """One line kept for the diagnosis: its number in the log, its masked text, its template."""

    number: int
    text: str
    template_id: str
    score: float


@dataclass(frozen=True)
class ReadLog:
    """What a diagnosis is made from: the kept lines in log order, the line count, the
    templates' counts in this log, and the templates themselves (by id)."""

    lines: list[KeptLine]
    line_count: int
    template_counts: dict[str, int]
    templates: dict[str, Template]
    secrets_masked: int


class LogReader:
    """Reads one log, chunk by chunk or line by line."""

    def __init__(self, miner: TemplateMiner, *, now_us: int = 0) -> None:
        self.miner = miner  # the template set's miner, which this log teaches
        self._now_us = now_us
        self._masker = SecretMasker()
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""
        self._partial_cut = False
        self._tail: deque[KeptLine] = deque()
        self._tail_chars = 0
        self._earlier: list[tuple[float, int, KeptLine]] = []  # a min-heap of the best ones
        self._counts: Counter[str] = Counter()
        self._templates: dict[str, Template] = {}
        self.line_count = 0

    def feed(self, chunk: bytes) -> None:
        """The next bytes of the log (a character or a line may be split between chunks)."""
        self._text(self._decoder.decode(chunk))

    def feed_text(self, text: str) -> None:
        """The next characters of the log."""
        self._text(text)

    def _text(self, text: str) -> None:
        pieces = text.split("\n")
        # Every piece but the last ends a line; the first continues what the last call left.
        complete: list[str] = []
        for piece in pieces[:-1]:
            self._keep_partial(piece)
            complete.append(self._partial)
            self._partial, self._partial_cut = "", False
        self._keep_partial(pieces[-1])
        if complete:
            self._lines(complete)

    def _keep_partial(self, piece: str) -> None:
        if self._partial_cut or not piece:
            return
        room = MAX_LINE_CHARS - len(self._partial)
        if len(piece) > room:
            piece, self._partial_cut = piece[:room], True
        self._partial += piece

    def _lines(self, raw: list[str]) -> None:
        # Masked together: one pass over them finds the few that can hold a secret.
        for text in self._masker.lines([strip_ansi(line) for line in raw]):
            self._line(text)

    def _line(self, text: str) -> None:
        self.line_count += 1
        template = self.miner.add(text, now_us=self._now_us, example=text)
        template_id = template.id if template is not None else ""
        if template is not None:
            self._templates[template.id] = template
        self._counts[template_id] += 1
        kept = KeptLine(self.line_count, text[:KEPT_CHARS], template_id, line_score(text))
        self._tail.append(kept)
        self._tail_chars += len(kept.text)
        while len(self._tail) > TAIL_LINES or self._tail_chars > TAIL_CHARS:
            oldest = self._tail.popleft()
            self._tail_chars -= len(oldest.text)
            self._remember(oldest)

    def _remember(self, line: KeptLine) -> None:
        if line.score <= 0:
            return
        entry = (line.score, line.number, line)
        if len(self._earlier) < EARLIER_LINES:
            heapq.heappush(self._earlier, entry)
        elif entry > self._earlier[0]:
            heapq.heapreplace(self._earlier, entry)

    def finish(self) -> ReadLog:
        """What was read; the last line counts even without a newline after it."""
        self._text(self._decoder.decode(b"", final=True))
        if self._partial or self._partial_cut:
            self._lines([self._partial])
            self._partial, self._partial_cut = "", False
        earlier = sorted((entry[2] for entry in self._earlier), key=lambda line: line.number)
        resolved = {tid: self.miner.resolve(tid) for tid in self._templates if tid in self.miner.templates}
        return ReadLog(
            lines=[*earlier, *self._tail],
            line_count=self.line_count,
            template_counts=dict(self._counts),
            templates=resolved,
            secrets_masked=self._masker.masked,
        )
