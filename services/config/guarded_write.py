"""One atomic step on Redis: check that what a plan read is unchanged, take the next revision,
apply the plan's writes with that revision filled in.

Guards name exactly what the plan depended on (an environment's revision, the namespace's
meta revision, the list of environments), so writers to different environments of one
namespace never invalidate each other, as they did when every commit watched the namespace's
revision counter. Values that carry the revision are assembled in the script by string
concatenation around the caller's text: re-encoding a JSON document with Lua's cjson would
lose float precision.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from redis import exceptions as redis_errors

from services.runtime.redis_client import Redis

REVISION = "\0"  # where the revision goes in a `filled` argument (JSON text never has a raw NUL)

# KEYS[1]: the revision counter; KEYS[2..]: every other key the guards and writes name.
# ARGV: a count of guards, the guards, a count of writes, the writes.
#   guard 'h', key, field, expected: HGET key field is `expected` ('' when there is none);
#   guard 'z', key, expected: the sorted set's members, joined by newlines, are `expected`.
#   write: command, key (0: none), argument count, arguments; an argument is '=' and its
#   value, or '%' and a text whose first NUL byte stands for the new revision.
# Returns the new revision, or 0 (nothing written) when a guard does not hold.
_SCRIPT = r"""
local at = 1
local function take()
  at = at + 1
  return ARGV[at - 1]
end
for _ = 1, tonumber(take()) do
  local kind, key = take(), KEYS[tonumber(take())]
  if kind == 'h' then
    local name, expected = take(), take()
    if (redis.call('HGET', key, name) or '') ~= expected then return 0 end
  elseif table.concat(redis.call('ZRANGE', key, 0, -1), '\n') ~= take() then
    return 0
  end
end
local revision = tostring(redis.call('INCR', KEYS[1]))
for _ = 1, tonumber(take()) do
  local command, key, args = take(), tonumber(take()), {}
  if key > 0 then args[1] = KEYS[key] end
  for _ = 1, tonumber(take()) do
    local arg = take()
    if string.byte(arg, 1) == 37 then
      local cut = string.find(arg, '\0', 2, true)
      arg = string.sub(arg, 2, cut - 1) .. revision .. string.sub(arg, cut + 1)
    else
      arg = string.sub(arg, 2)
    end
    args[#args + 1] = arg
  end
  redis.call(command, unpack(args))
end
return tonumber(revision)
"""
_SHA = hashlib.sha1(_SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class Filled:
    """An argument with the new revision put where `template` has REVISION."""

    template: str


Argument = str | int | Filled


@dataclass
class GuardedWrite:
    """Guards and writes, built by the store, applied by one script call."""

    counter: str  # the key INCR takes the revision from
    _keys: dict[str, int] = field(default_factory=dict)  # key -> its index in KEYS (from 1)
    _guards: list[str | int] = field(default_factory=list)
    _guard_count: int = 0
    _writes: list[str | int] = field(default_factory=list)
    _write_count: int = 0

    def __post_init__(self) -> None:
        self._key(self.counter)

    def _key(self, key: str) -> int:
        return self._keys.setdefault(key, len(self._keys) + 1)

    def expect_field(self, key: str, name: str, value: str) -> None:
        """Write only if hash `key`'s field `name` is still `value` ('': still absent)."""
        self._guards += ["h", self._key(key), name, value]
        self._guard_count += 1

    def expect_members(self, key: str, members: list[str]) -> None:
        """Write only if sorted set `key` still has exactly `members` (in its order)."""
        self._guards += ["z", self._key(key), "\n".join(members)]
        self._guard_count += 1

    def command(self, name: str, key: str | None, *args: Argument) -> None:
        """Run Redis command `name` on `key` (None: a command without one, e.g. PUBLISH)."""
        encoded = [f"%{a.template}" if isinstance(a, Filled) else f"={a}" for a in args]
        self._writes += [name, self._key(key) if key is not None else 0, len(encoded), *encoded]
        self._write_count += 1

    async def apply(self, redis: Redis) -> int:
        """The new revision, or 0 if a guard no longer holds (then nothing was written)."""
        args = [
            len(self._keys),
            *self._keys,
            self._guard_count,
            *self._guards,
            self._write_count,
            *self._writes,
        ]
        try:
            reply = await redis.execute_command("EVALSHA", _SHA, *args)
        except redis_errors.NoScriptError:  # Redis restarted or flushed its scripts: send it whole
            reply = await redis.execute_command("EVAL", _SCRIPT, *args)
        return int(reply)
