"""Words that carry the meaning of a log line: two lines that differ in one of them are two
events ("VM Started" and "VM Paused"), never one template with a parameter (drain3 issue #109).

The list is generic: lifecycle and outcome words, HTTP methods and log levels, as CI tools
and system daemons print them. Compared without case.
"""

from __future__ import annotations

_STEMS = """
start started starting starts startup stop stopped stopping stops shutdown
pause paused pausing resume resumed resuming restart restarted restarting reboot rebooted
create created creating delete deleted deleting destroy destroyed destroying spawn spawned spawning
kill killed killing terminate terminated terminating exit exited
open opened opening close closed closing connect connected connecting disconnect disconnected
accept accepted reject rejected refuse refused deny denied allow allowed grant granted
enable enabled disable disabled add added remove removed insert inserted drop dropped
succeed succeeded success successful successfully fail failed failing failure error errors
pass passed skip skipped ok
up down online offline ready running pending waiting finished completed complete done
abort aborted cancel cancelled canceled timeout expired
register registered unregister unregistered mount mounted unmount unmounted load loaded unload unloaded
install installed uninstall uninstalled update updated upgrade upgraded downgrade downgraded
build built deploy deployed rollback push pushed pull pulled
login logout sent send received receive read write wrote
true false yes no on off begin end
get post put patch head options
debug info notice warn warning fatal critical crit severe trace emerg alert
"""

PROTECTED: frozenset[str] = frozenset(_STEMS.split())


def is_protected(token: str) -> bool:
    """Whether `token` (a word, any case, perhaps followed by punctuation) is a meaningful word."""
    return token.lower().rstrip(".,;:!") in PROTECTED
