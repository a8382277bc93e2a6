"""Benchmarks; `make bench` prints one JSON document on stdout.

`make bench` measures the hot paths of the services through everything a call goes through
(the call pipeline, authentication, rate limits, Redis, Vault, the Envoy edge), each against
a baseline measured in the same run with the same load: a bare grpc.aio server, the same call
with a layer off, a direct read of the store. One section per module in `sections/`; its
docstring says what it measures and its goals.

    python -m tools.bench                     # what `make bench` runs: every section of `all`
    python -m tools.bench writes              # one section (`--help` lists them)
    python -m tools.bench config --duration 5 # seconds measured per target, over its rounds

Every comparison takes turns: each target is measured ROUNDS times, one after the other, and
reports its median round (`rps_rounds` lists them all). Other tenants of a shared machine
come and go; one long run each put a passing slowdown on whichever target it hit, and ratios
moved by ±10% from run to run. The client processes of one measurement connect, wait for
each other, warm up together and count the calls of the same stretch of time: a process that
is still starting while the others already count leaves the server short of load.

Goals are reported in the JSON (`goal_*`), never asserted: a benchmark on a shared 2-core
machine measures the machine too.

One job per module: `load` (client processes, threads, the REST client, the start barrier,
measure, interleaved rounds, ratios), `stats` (percentiles; quantiles of a service's own
histograms from /metrics), `echo` (the bare echo server), `seed` (the bench namespace and an
admin API key), `fanout` (the watch fan-out, shared by the config and watch sections),
`sections` (one module per section, found by `command`, which prints the JSON).

A new section is one new module in `sections/` declaring `SECTION = Section(name, run,
order)`: `run(duration)` starts what it measures on free loopback ports, stops it all, and
returns its figures; `order` places it in `all` (None: on its own only).
"""
