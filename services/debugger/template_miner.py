"""An online, Drain-like log template miner (He et al., ICWS 2017), written for this service.

Each line is masked (`log_masks`) into tokens; the templates that could hold it are those
with as many tokens and the same first word (Drain's first two tree levels); the most
similar one above `similarity` takes it, turning the positions where they differ into
parameters; otherwise the line starts a template of its own. A template keeps its id when
it generalises. A meaningful word (`keywords`) never becomes a parameter, and neither does
the first word.

Drain merges two lines that differ in any token when enough of the rest agrees; measured on
Loghub that merges most distinct events that differ in one word ("stored as bytes" and
"stored as values"), so here a word is a constant and only tokens that hold a value (a digit,
a masked value) become parameters at once. Words do become parameters when the evidence is
there: when one position of otherwise equal templates has held FAMILY_WORDS different words
(user names), the templates become one.

The miner is plain Python with no I/O: `template_store` persists its templates.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

from services.debugger.keywords import PROTECTED
from services.debugger.log_masks import WILDCARD, mask_line

DEFAULT_SIMILARITY = 0.5
# Different words one position of otherwise equal templates holds before it is a parameter.
FAMILY_WORDS = 4
# Templates longer than this join no family: a family key is the whole template, once per
# position, and long templates are rare enough not to need one.
FAMILY_MAX_TOKENS = 24
MAX_EXAMPLE_CHARS = 512
SEEN_PER_TEMPLATE = 4  # masked lines remembered per template, for the exact-match shortcut
_PUNCTUATION = "\"'`.,;:!?()[]{}<>"


@dataclass
class Template:
    """One mined template: its tokens (`<*>` for a parameter) and what was seen of it."""

    id: str
    tokens: list[str]
    count: int = 0
    first_seen_us: int = 0
    last_seen_us: int = 0
    example: str = ""  # a line it holds, already masked of secrets by the caller
    merged_into: str = ""  # the template that took it over, once it has
    # Changed since the store last saved it, and the lines it took since then.
    dirty: bool = field(default=False, compare=False)
    pending: int = field(default=0, compare=False)

    @property
    def text(self) -> str:
        return " ".join(self.tokens)


def template_id(tokens: Iterable[str]) -> str:
    """The id a template gets from the tokens of the line that created it: every replica that
    creates it from the same line names it the same."""
    return hashlib.sha256("\x1f".join(tokens).encode()).hexdigest()[:16]


def _route(tokens: list[str]) -> tuple[int, str]:
    first = tokens[0] if tokens else ""
    if any(c.isdigit() for c in first):
        first = WILDCARD
    return len(tokens), first


def _protected(token: str) -> bool:
    return token.lower().strip(_PUNCTUATION) in PROTECTED


def _word(token: str) -> bool:
    """A token with no digit and no masked value in it."""
    return not any(c.isdigit() or c == "<" for c in token)


def _constant(token: str) -> bool:
    """Whether a token stays what it is when another line differs there: a word (no digit, no
    value in it), unless a family of templates shows it is a parameter (`_join_families`)."""
    return _protected(token) or _word(token)


class TemplateMiner:
    """Templates of one template set, mined online."""

    def __init__(self, *, similarity: float = DEFAULT_SIMILARITY, max_templates: int = 100_000) -> None:
        """`max_templates` bounds the set and, with it, the miner's memory: every structure
        here holds at most a few entries per template, each of at most MAX_TOKENS tokens."""
        self.similarity = similarity
        self.max_templates = max_templates
        self.templates: dict[str, Template] = {}
        self._buckets: dict[tuple[int, str], list[Template]] = {}
        self._seen: dict[tuple[str, ...], Template] = {}
        self._families: dict[tuple[int, tuple[str, ...]], list[Template]] = {}

    def __len__(self) -> int:
        return len(self.templates)

    def _best(self, tokens: list[str]) -> Template | None:
        candidates = self._buckets.get(_route(tokens))
        if not candidates:
            return None
        best, best_score = None, -1.0
        n = len(tokens)
        for template in candidates:
            same = 0
            for mine, theirs in zip(template.tokens, tokens, strict=True):
                if mine in (theirs, WILDCARD):
                    same += 1
                elif _constant(mine) or _constant(theirs):
                    same = -1
                    break
            score = same / n if n else 1.0
            if score > best_score:
                best, best_score = template, score
        return best if best is not None and best_score >= self.similarity else None

    def match(self, line: str) -> Template | None:
        """The template that holds `line`, learning nothing."""
        tokens = mask_line(line)
        found = self._seen.get(tuple(tokens))
        return found if found is not None else self._best(tokens)

    def add(self, line: str, *, now_us: int = 0, example: str = "") -> Template | None:
        """The template of `line`, which learns from it (None when the set is full and the line
        would need a new template)."""
        tokens = mask_line(line)
        key = tuple(tokens)
        template = self._seen.get(key)
        while template is not None and template.merged_into:
            template = self.templates[template.merged_into]
        if template is None:
            template = self._best(tokens)
            if template is None:
                if len(self.templates) >= self.max_templates:
                    return None
                template = Template(
                    template_id(tokens),
                    list(tokens),
                    first_seen_us=now_us,
                    example=example[:MAX_EXAMPLE_CHARS],
                )
                self._install(template)
                template = self._join_families(template)
            elif self._generalise(template, tokens):
                self._cover(template)
            if len(self._seen) < SEEN_PER_TEMPLATE * self.max_templates:
                self._seen[key] = template
        template.count += 1
        template.pending += 1
        template.last_seen_us = max(template.last_seen_us, now_us)
        template.dirty = True
        return template

    def _generalise(self, template: Template, tokens: list[str]) -> bool:
        """Make parameters of the positions where `tokens` differ; whether any changed."""
        changed = False
        for i, (mine, theirs) in enumerate(zip(template.tokens, tokens, strict=True)):
            if mine != theirs and mine != WILDCARD:
                template.tokens[i] = WILDCARD
                changed = True
        return changed

    def _cover(self, general: Template) -> None:
        """Absorb the templates of `general`'s bucket that it now holds entirely: a line that
        came before a position became a parameter made a template of its own."""
        for other in list(self._buckets[_route(general.tokens)]):
            if other is not general and all(
                mine in (WILDCARD, theirs) for mine, theirs in zip(general.tokens, other.tokens, strict=True)
            ):
                self._absorb(general, other)

    def resolve(self, template_id: str) -> Template:
        """The template that holds what `template_id` held: itself, or the one it became part of."""
        template = self.templates[template_id]
        while template.merged_into:
            template = self.templates[template.merged_into]
        return template

    def _join_families(self, template: Template) -> Template:
        """Words are constants until one position of otherwise equal templates has held
        FAMILY_WORDS different words: then it is a parameter (user names), and the templates
        become the oldest of them."""
        tokens = template.tokens
        if len(tokens) > FAMILY_MAX_TOKENS:
            return template
        for i in range(1, len(tokens)):
            word = tokens[i]
            if word == WILDCARD or not _word(word) or _protected(word):
                continue
            key = (i, (*tokens[:i], WILDCARD, *tokens[i + 1 :]))
            members = self._families.setdefault(key, [])
            members.append(template)
            if len({m.tokens[i] for m in members}) >= FAMILY_WORDS:
                survivor = members[0]
                survivor.tokens[i] = WILDCARD
                for other in members[1:]:
                    self._absorb(survivor, other)
                del self._families[key]
                self._cover(survivor)
                return survivor
        return template

    def _absorb(self, survivor: Template, other: Template) -> None:
        if other.merged_into or other is survivor:
            return
        if len(other.tokens) == len(survivor.tokens):
            self._generalise(survivor, other.tokens)
        survivor.count += other.count
        survivor.pending += other.pending
        other.pending = 0
        survivor.first_seen_us = min(filter(None, (survivor.first_seen_us, other.first_seen_us)), default=0)
        survivor.last_seen_us = max(survivor.last_seen_us, other.last_seen_us)
        survivor.dirty = other.dirty = True
        other.merged_into = survivor.id
        bucket = self._buckets.get(_route(other.tokens), [])
        if other in bucket:
            bucket.remove(other)

    def _install(self, template: Template) -> None:
        self.templates[template.id] = template
        self._buckets.setdefault(_route(template.tokens), []).append(template)

    def merge(self, stored: Template) -> None:
        """Take in a template as stored (what every replica saved, with this one's unsaved lines
        counted in): a new one is added, a known one takes the union of both (parameters where
        either has one, the stored count, the wider span, the template it became part of)."""
        known = self.templates.get(stored.id)
        if known is None:
            if stored.merged_into:
                self.templates[stored.id] = stored
            else:
                self._install(stored)
            return
        if len(known.tokens) == len(stored.tokens):
            self._generalise(known, stored.tokens)
        if stored.merged_into and not known.merged_into and stored.merged_into in self.templates:
            known.merged_into = stored.merged_into
            bucket = self._buckets.get(_route(known.tokens), [])
            if known in bucket:
                bucket.remove(known)
        known.count = stored.count
        known.first_seen_us = min(filter(None, (known.first_seen_us, stored.first_seen_us)), default=0)
        known.last_seen_us = max(known.last_seen_us, stored.last_seen_us)
        known.example = known.example or stored.example
