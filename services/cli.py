"""The `devmesh` command: `devmesh serve [SERVICE...|all]`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap

from services import catalog
from services.runtime import logging as runtime_logging
from services.runtime import settings
from services.runtime.server import serve


def _settings_help() -> str:
    classes: list[type] = [settings.RuntimeSettings]
    classes += [m.settings for m in catalog.resolve(["all"])]
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
    args = parser.parse_args(argv)

    try:
        modules = catalog.resolve(args.services)
    except ValueError as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 2
    # Load every settings class before binding anything, and report all bad values at once.
    loaded: dict[type, object] = {}
    problems = []
    for cls in [settings.RuntimeSettings, *(m.settings for m in modules)]:
        try:
            loaded[cls] = settings.load(cls)
        except settings.SettingsError as exc:
            problems.append(str(exc))
    if problems:
        print("devmesh: " + "\n".join(problems), file=sys.stderr)
        return 2
    runtime_settings = loaded[settings.RuntimeSettings]
    assert isinstance(runtime_settings, settings.RuntimeSettings)
    runtime_logging.configure(runtime_settings.log_level)
    try:
        # Reflection describes every devmesh service, so that `grpcurl list` through the edge
        # (which asks whichever upstream) sees the whole API.
        everything = [s for m in catalog.resolve(["all"]) for s in m.proto_services]
        asyncio.run(serve(runtime_settings, [m.build for m in modules], dict(os.environ), everything))
    except settings.SettingsError as exc:
        print(f"devmesh: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
