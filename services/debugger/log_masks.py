"""Generic masks for the variable parts of CI and system log lines, before template mining.

One configuration for every log: each mask is a kind of value that varies between two lines
of the same event (a timestamp, a duration, a size, an address, a path, a version, a hash, a
number), written for the forms CI tools and system daemons print, never for one system's
format. `mask_line` replaces each value with its placeholder (`<TS>`, `<NUM>`...) and returns
the line's tokens; a token left holding only placeholders and punctuation is a parameter.

The masks run as one alternation, left to right: at a given position the first kind listed
wins, so the specific kinds (a timestamp, a UUID) come before the general ones (a number).
Values that span several words ("Sun Jul 24 02:38:22 2005", "1.98 KB", "<1 sec") are one
value: drain3's miner splits such a template by its token count (drain3 issue #66).
"""

from __future__ import annotations

import re

# Escape sequences: colours and cursor movement (CSI), and OSC titles that CI runners print.
_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")

_MONTH = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]*"
_DAY = r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)[a-z]*"
_CLOCK = r"\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?"
_ZONE = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_UNIT_TIME = (
    r"(?:ns|us|µs|ms|s|sec|secs|second|seconds|m|min|mins|minute|minutes|h|hr|hrs|hour|hours|d|day|days)"
)
_UNIT_SIZE = r"(?:[KMGTPE]i?B|[KMGTPE]|B|b|bytes?|kb|mb|gb)"
# A value ends where a word would go on: not before a letter, digit or another piece of a value.
_END = r"(?![\w.]*\w)"
_QUERY = r"(?:\?[^\s\"'<>]*)?"

_KINDS: tuple[tuple[str, str], ...] = (
    # 2024-05-01T12:00:00.123Z, 2024-05-01 12:00:00,123, 2024/05/01 12:00
    ("TS", rf"\d{{4}}[-/]\d{{2}}[-/]\d{{2}}(?:[T\s_]{_CLOCK}{_ZONE})?"),
    # Sun Jul 24 02:38:22 2005, Jul 24 02:38:22, 24 Jul 2005 02:38:22, [04/Dec/2005:04:47:44 +0000]
    ("TS", rf"(?:{_DAY},?\s+)?{_MONTH}\s+\d{{1,2}},?\s+(?:\d{{4}}\s+)?{_CLOCK}(?:\s+\d{{4}})?{_ZONE}"),
    ("TS", rf"\d{{1,2}}[\s/-]{_MONTH}[\s/-]\d{{4}}(?:[\s:]{_CLOCK}{_ZONE})?"),
    ("HASH", r"(?:sha1|sha256|sha384|sha512|md5):[0-9a-fA-F]{8,}"),
    ("UUID", r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"),
    ("URL", r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>()\[\]{},]+"),
    ("EMAIL", r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    ("IP", r"\d{1,3}(?:\.\d{1,3}){3}(?::\d{1,5})?(?![\w.]*\w)"),
    ("IP", r"\[?(?:[0-9a-fA-F]{1,4}:){2,7}[0-9a-fA-F]{1,4}\]?(?::\d{1,5})?"),
    # Host names: dotted labels ending in a common top-level domain (not module.Class names).
    (
        "HOST",
        r"(?:(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.)+"
        r"(?:com|net|org|edu|gov|mil|int|info|biz|asia|io|dev|app|cloud|local|localdomain|internal|lan|svc|cluster)"
        r"|(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?\.){2,}[a-z]{2})(?::\d{1,5})?(?![\w.-]*\w)",
    ),
    # host:port, a name and a port alone in a token (localhost:8080, wpad:80).
    ("HOST", r"[A-Za-z][\w.-]*:\d{1,5}(?=[\s,;)\]]|$)"),
    ("HEX", r"0[xX][0-9a-fA-F]+"),
    # Paths: two or more segments, or one absolute segment; a :line[:column] suffix belongs to it.
    ("PATH", r"(?:[A-Za-z]:)?(?:\.{0,2}/)?(?:[\w.@%+~-]+/)+[\w.@%+~-]*(?::\d+){0,2}" + _QUERY),
    ("PATH", r"/[\w.@%+~-]+(?::\d+){0,2}" + _QUERY),
    ("PATH", r"[A-Za-z]:\\(?:[\w.@%+~ -]+\\)*[\w.@%+~-]*"),
    # Hashes and ids: long runs of hex holding a digit (a git sha, a container id, a digest).
    ("HASH", r"(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}" + _END),
    ("VERSION", r"v?\d+(?:\.\d+){2,}(?:[-+][0-9A-Za-z.-]+)?" + _END),
    ("VERSION", r"v\d+(?:\.\d+)+" + _END),
    # Sizes and durations: a number with its unit, with or without the space between.
    ("SIZE", rf"[-+]?\d+(?:\.\d+)?\s?{_UNIT_SIZE}(?![\w])"),
    ("DURATION", rf"[<>~]?\d+(?:\.\d+)?\s?{_UNIT_TIME}(?![\w])"),
    ("DURATION", r"\d+(?:[hms]\d+)+(?:\.\d+)?[hms]?(?![\w])"),
    ("TIME", _CLOCK + _ZONE + r"(?![\w:])"),
    ("NUM", r"[-+]?\d+(?:[.,]\d+)*"),
)

_GROUPS = {f"k{i}": kind for i, (kind, _) in enumerate(_KINDS)}
# Values start at a boundary, not inside a word (SOCKS5, tty2 and sha256 stay words) nor inside
# another value (a host name, a path). One lookbehind before the alternation: inside a word it
# fails at once, instead of once for every kind.
_MASKS = re.compile(
    r"(?<![\w.@%+~-])(?:" + "|".join(f"(?P<k{i}>{pattern})" for i, (_, pattern) in enumerate(_KINDS)) + ")"
)
_PLACEHOLDER = {name: f"<{kind}>" for name, kind in _GROUPS.items()}
# What is left of a token once its values are placeholders: punctuation only, or nothing.
_PARAMETER_REST = re.compile(r"[^\w]*")
_PLACEHOLDERS = re.compile(r"<[A-Z]+>")
# A token that may hold a value: a digit, a path or URL separator, an address, a dotted name.
_MAY_HOLD_VALUE = re.compile(r"[\d/\\:@]|\w\.\w")
WILDCARD = "<*>"

# Words that belong to the value next to them: a month or weekday before a date or a time,
# a unit or a time zone after a number ("Jul 24 02:38:22", "1.98 KB", "<1 sec", "12:00 UTC").
_MONTHS_AND_DAYS = """
jan feb mar apr may jun jul aug sep oct nov dec january february march april june july august
september october november december mon tue wed thu fri sat sun monday tuesday wednesday
thursday friday saturday sunday
"""
_UNITS = """
b kb mb gb tb pb kib mib gib tib byte bytes k m g ns us µs ms s sec secs second seconds min mins
minute minutes h hr hrs hour hours d day days utc gmt z
"""
_BEFORE_VALUE = frozenset(_MONTHS_AND_DAYS.split())
_AFTER_VALUE = frozenset(_UNITS.split())
_TOKEN_CACHE_SIZE = 65536
_CACHED_TOKEN_CHARS = 64
# Tokens of a line that count; past them (minified code, data dumps) the rest is a parameter,
# so that a template, and the memory it takes, stays the size of a log line's words.
MAX_TOKENS = 64
_token_cache: dict[str, str] = {}


def forget_tokens() -> None:
    """Empty the cache of masked tokens (a benchmark measures with a cold one)."""
    _token_cache.clear()


def strip_ansi(line: str) -> str:
    """`line` as a terminal shows it: escape sequences removed, and of a line redrawn with
    carriage returns (progress bars) only what was drawn last."""
    if "\r" in line:
        line = line.rstrip("\r")
        line = line[line.rfind("\r") + 1 :]
    if "\x1b" in line:
        line = _ANSI.sub("", line)
    return line


def _placeholder(match: re.Match[str]) -> str:
    return _PLACEHOLDER[match.lastgroup or ""]


def mask_values(text: str) -> str:
    """`text` with every value replaced by its kind's placeholder."""
    return _MASKS.sub(_placeholder, text)


def is_parameter(token: str) -> bool:
    """Whether a masked token holds nothing but values and punctuation."""
    if "<" not in token:
        return False
    rest = _PLACEHOLDERS.sub("", token)
    return _PARAMETER_REST.fullmatch(rest) is not None


def mask_token(token: str) -> str:
    """One token with its values masked: `<*>` for a token that is nothing but values and
    punctuation, the token with placeholders inside it otherwise (`blk_<NUM>`, `uid=<NUM>`)."""
    if token.isdigit():
        return WILDCARD
    found = _token_cache.get(token)
    if found is not None:
        return found
    if _MAY_HOLD_VALUE.search(token) is None:
        masked = token
    else:
        masked = mask_values(token)
        if is_parameter(masked):
            masked = WILDCARD
    if len(token) <= _CACHED_TOKEN_CHARS:
        if len(_token_cache) >= _TOKEN_CACHE_SIZE:
            _token_cache.clear()
        _token_cache[token] = masked
    return masked


def _value_follows(raw: list[str], index: int) -> bool:
    while index < len(raw) and raw[index].lower().strip(",.") in _BEFORE_VALUE:
        index += 1
    return index < len(raw) and mask_token(raw[index]) == WILDCARD


def mask_line(line: str) -> list[str]:
    """The masked tokens of `line`: values replaced, parameter tokens made `<*>`, runs of
    parameters (a value written as several words) made one, and bracketed groups of nothing
    but values (`(1.98 KB)`, `()`) dropped: they qualify the value before them."""
    tokens: list[str] = []
    previous_value = False
    raw = strip_ansi(line).split(maxsplit=MAX_TOKENS)
    if len(raw) > MAX_TOKENS:  # the rest of a very long line is one parameter
        raw[MAX_TOKENS:] = [WILDCARD]
    for index, token in enumerate(raw):
        masked = mask_token(token)
        if masked is not WILDCARD and masked != WILDCARD:
            word = token.lower().strip(",.;:()[]")
            if previous_value and word in _AFTER_VALUE:
                continue  # the unit of the value before it
            if word in _BEFORE_VALUE and _value_follows(raw, index + 1):
                masked = WILDCARD
        if masked == WILDCARD:
            previous_value = True
            if tokens and tokens[-1] == WILDCARD:
                continue
        else:
            previous_value = False
            if masked[0] in "([" and masked[-1] in ")]" and (len(masked) == 2 or is_parameter(masked)):
                continue
        tokens.append(masked)
    return tokens
