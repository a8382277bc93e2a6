"""Template sets in Redis, shared by every replica, in a format of our own (JSON, never pickle).

One hash per set (`devmesh:debugger:templates:{set}`: template id -> its JSON), a sorted set
of changes (id scored by the set's change counter) and the counter. A save merges each
template into what is stored in one Lua script: a new one is added, a known one takes the
union (a parameter where either has one), its count grows by what this replica saw since it
last saved, its span widens. Saves therefore commute: replicas writing at once lose no
template and no generalisation. Ids are made from the line that created a template, so two
replicas creating it from the same line name it the same.

Each replica keeps a miner per set in memory and, before using it, reads the changes made
since it last looked (`ZRANGEBYSCORE`), so that it mines with what the others learnt.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass

from services.debugger.template_miner import Template, TemplateMiner
from services.runtime.redis_client import Redis

PREFIX = "devmesh:debugger:templates"
# Template sets whose miners a replica keeps in memory; the least recently used one with
# nothing left to save goes first (its templates stay in Redis and are read back when it is
# used again). Without a bound, every set name a caller sends would hold a miner for good.
MAX_CACHED_SETS = 32
SAVE_BATCH = 256  # templates per save script call

_SAVE = """
local merged = 0
local before = tonumber(redis.call('GET', KEYS[3]) or '0')
for i = 1, #ARGV, 2 do
  local id, given = ARGV[i], cjson.decode(ARGV[i + 1])
  local raw = redis.call('HGET', KEYS[1], id)
  local record = given
  if raw then
    record = cjson.decode(raw)
    if #record.t == #given.t then
      for j = 1, #record.t do
        if record.t[j] ~= given.t[j] then record.t[j] = '<*>' end
      end
    end
    record.c = record.c + given.c
    if given.f > 0 and (record.f == 0 or given.f < record.f) then record.f = given.f end
    if given.l > record.l then record.l = given.l end
    if record.m == '' then record.m = given.m end
    if record.e == '' then record.e = given.e end
  end
  redis.call('HSET', KEYS[1], id, cjson.encode(record))
  local version = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[2], version, id)
  merged = merged + 1
end
return {merged, before, tonumber(redis.call('GET', KEYS[3]) or '0')}
"""


def _keys(template_set: str) -> list[str]:
    return [
        f"{PREFIX}:{template_set}",
        f"{PREFIX}:{template_set}:changes",
        f"{PREFIX}:{template_set}:version",
    ]


def encode(template: Template, count: int) -> str:
    """A template as stored; `count` is what this save adds to its count."""
    return json.dumps(
        {
            "t": template.tokens,
            "c": count,
            "f": template.first_seen_us,
            "l": template.last_seen_us,
            "e": template.example,
            "m": template.merged_into,
        },
        separators=(",", ":"),
    )


def decode(template_id: str, raw: bytes | str) -> Template:
    """A stored template (only JSON: nothing in it is ever run)."""
    record = json.loads(raw)
    tokens = record["t"]
    if tokens == {}:  # Lua's cjson writes an empty array (an empty line's template) as {}
        tokens = []
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise ValueError(f"template {template_id} is not a list of tokens")
    return Template(
        id=template_id,
        tokens=list(tokens),
        count=int(record["c"]),
        first_seen_us=int(record["f"]),
        last_seen_us=int(record["l"]),
        example=str(record["e"]),
        merged_into=str(record["m"]),
    )


@dataclass
class _Cached:
    miner: TemplateMiner
    seen_version: float = 0.0


class TemplateStore:
    """Every template set this replica uses: its miners, kept in step with Redis."""

    def __init__(self, redis: Redis, *, max_templates: int, max_cached_sets: int = MAX_CACHED_SETS) -> None:
        self._redis = redis
        self._max_templates = max_templates
        self._max_cached_sets = max_cached_sets
        self._save = redis.register_script(_SAVE)
        self._sets: OrderedDict[str, _Cached] = OrderedDict()

    @property
    def cached_sets(self) -> int:
        """How many template sets' miners this replica holds in memory."""
        return len(self._sets)

    def _evict(self) -> None:
        for name in list(self._sets):
            if len(self._sets) <= self._max_cached_sets:
                return
            if not any(t.dirty for t in self._sets[name].miner.templates.values()):
                del self._sets[name]

    async def miner(self, template_set: str) -> TemplateMiner:
        """The set's miner, with every template other replicas saved since this one last looked."""
        cached = self._sets.get(template_set)
        if cached is None:
            cached = self._sets[template_set] = _Cached(TemplateMiner(max_templates=self._max_templates))
            self._evict()
        self._sets.move_to_end(template_set)
        hash_key, changes, _ = _keys(template_set)
        found = await self._redis.zrangebyscore(changes, f"({cached.seen_version}", "+inf", withscores=True)
        if found:
            ids = [member.decode() if isinstance(member, bytes) else member for member, _ in found]
            raws = await self._redis.hmget(hash_key, ids)
            for template_id, raw in zip(ids, raws, strict=True):
                if raw is not None:
                    stored = decode(template_id, raw)
                    known = cached.miner.templates.get(template_id)
                    stored.count += known.pending if known is not None else 0
                    cached.miner.merge(stored)
            cached.seen_version = max(score for _, score in found)
        return cached.miner

    async def save(self, template_set: str, miner: TemplateMiner) -> int:
        """Save what `miner` (the set's, as `miner()` gave it: it may have been evicted since)
        learnt since it last saved; how many templates. At most SAVE_BATCH templates go to
        Redis at a time, so that a log that touched the whole set does not hold all of it
        encoded at once (the merges commute: splitting a save loses nothing)."""
        dirty = [template for template in miner.templates.values() if template.dirty]
        saved = 0
        in_step = True  # whether nobody else has written since this replica last read
        for start in range(0, len(dirty), SAVE_BATCH):
            args: list[str] = []
            for template in dirty[start : start + SAVE_BATCH]:
                args.extend([template.id, encode(template, template.pending)])
                template.dirty = False
                template.pending = 0
            merged, before, after = (int(n) for n in await self._save(keys=_keys(template_set), args=args))
            saved += merged
            cached = self._sets.get(template_set)
            if in_step and cached is not None and cached.miner is miner and before == cached.seen_version:
                # What it would read back is its own save, which it already holds.
                cached.seen_version = after
            else:
                in_step = False
        return saved

    async def listing(self, template_set: str) -> list[Template]:
        """Every template of the set as stored, most frequent first (merged ones left out)."""
        raw = await self._redis.hgetall(_keys(template_set)[0])
        templates = [decode(k.decode() if isinstance(k, bytes) else k, v) for k, v in raw.items()]
        return sorted((t for t in templates if not t.merged_into), key=lambda t: (-t.count, t.id))
