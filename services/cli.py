"""The `devmesh` command: `devmesh serve [SERVICE...|all]`, and each service's own commands
(`devmesh <service> ...`, from the module its spec names)."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import textwrap

from services import catalog
from services.runtime import logging as runtime_logging
from services.runtime import settings
from services.runtime.server import serve


def _settings_help() -> str:
    classes: list[type] = [settings.RuntimeSettings]
    classes += [spec.settings for spec in catalog.every()]
    lines = ["settings (environment variables):"]
    for cls in classes:
        for env, default, description in settings.describe(cls):
            lines.append(f"  {env} (default {default})")
            lines.extend(textwrap.wrap(description, 88, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devmesh", description="devmesh gRPC services")
    sub = parser.add_subparsers(dest="command", required=True)
    serve_parser = sub.add_parser(
        "serve",
        help="host services in one gRPC server",
        description=f"Host the named services (or all) in one grpc.aio server. Available: "
        f"{', '.join(catalog.SERVICES)}.",
        epilog=_settings_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve_parser.add_argument("services", nargs="*", default=["all"], help="service names, or all")
    for spec in catalog.every():
        if spec.commands:
            module = importlib.import_module(spec.commands)
            # A commands module may offer shorter names too (`devmesh debug` for the debugger).
            aliases = list(getattr(module, "ALIASES", ()))
            commands = sub.add_parser(spec.name, aliases=aliases, help=f"{spec.name}: {spec.summary}")
            module.add_commands(commands)
            # ... and commands of its own at the top (`devmesh worker` for `devmesh pipeline worker`).
            if hasattr(module, "add_top_level_commands"):
                module.add_top_level_commands(sub)
    args = parser.parse_args(argv)
    if args.command != "serve":
        if not hasattr(args, "run"):
            parser.parse_args([args.command, "--help"])
        return int(args.run(args))

    try:
        hosted = catalog.resolve(args.services)
    except ValueError as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 2
    # Load every settings class once, before binding anything, and report all bad values at once.
    problems = []
    try:
        runtime_settings = settings.load(settings.RuntimeSettings)
    except settings.SettingsError as exc:
        problems.append(str(exc))
    loaded: dict[str, object] = {}
    for spec in hosted:
        try:
            loaded[spec.name] = settings.load(spec.settings)
        except settings.SettingsError as exc:
            problems.append(str(exc))
    if problems:
        print("devmesh: " + "\n".join(problems), file=sys.stderr)
        return 2
    runtime_logging.configure(runtime_settings.log_level)
    try:
        # The whole mesh: its roles' grants, and reflection of every API, so that `grpcurl list`
        # through the edge (which asks whichever upstream) sees all of it.
        mesh = catalog.every()
        asyncio.run(serve(runtime_settings, hosted, dict(os.environ), mesh=mesh, settings_by_name=loaded))
    except settings.SettingsError as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
