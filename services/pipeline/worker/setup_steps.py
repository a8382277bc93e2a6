"""The worker's `setup` steps: check that the toolchain a job asks for is there, never install.

A step names a tool and maybe a version: the tool's binary must be on the job's PATH, and when
the version is a number (`3.12`, `20`, `1.22`, `v20`, `3.x`) the version the binary reports must
start with it, component by component (`3.12` takes 3.12.4, not 3.1 or 3.120). A version
without digits (`stable`, `latest`, `lts/*`) takes any. Anything else (a range such as
`>=3.10`) cannot be checked here and fails the step, as does a missing tool or another version:
the job fails SETUP_FAILED with the tool, the version wanted and the version found.
"""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass

from devmesh.pipeline.v1 import model_pb2
from services.pipeline.runs import states

VERSION_TIMEOUT_S = 15.0
OUTPUT_LIMIT = 4096
_NUMBER = re.compile(r"\d+(?:\.\d+)*")
_FOUND = re.compile(r"\d+(?:\.\d+)+|\d+")


@dataclass(frozen=True)
class Toolchain:
    binaries: tuple[str, ...]  # tried in order on PATH
    version_args: tuple[str, ...]


TOOLCHAINS = {
    "python": Toolchain(("python3", "python"), ("--version",)),
    "node": Toolchain(("node",), ("--version",)),
    "go": Toolchain(("go",), ("version",)),
    "java": Toolchain(("java",), ("-version",)),  # prints to stderr
    "rust": Toolchain(("rustc",), ("--version",)),
    "dotnet": Toolchain(("dotnet",), ("--version",)),
    "ruby": Toolchain(("ruby",), ("--version",)),
    "php": Toolchain(("php",), ("--version",)),
    "bun": Toolchain(("bun",), ("--version",)),
}

Outcome = tuple[str, str, int, str]


def wanted_parts(version: str) -> tuple[str, ...] | None:
    """The components a found version must start with: () for any version, None when the
    version is a form this check does not understand."""
    text = version.strip().removeprefix("v")
    text = re.sub(r"(\.[x*])+$", "", text)
    if not any(c.isdigit() for c in text):
        return ()
    if not _NUMBER.fullmatch(text):
        return None
    return tuple(text.split("."))


def found_version(output: str) -> str:
    """The first version number in a tool's `--version` output ('' when there is none)."""
    match = _FOUND.search(output)
    return match.group(0) if match else ""


def satisfies(wanted: tuple[str, ...], found: str) -> bool:
    parts = tuple(found.split("."))
    return parts[: len(wanted)] == wanted


async def _version_of(binary: str, args: tuple[str, ...], env: dict[str, str]) -> str:
    process = await asyncio.create_subprocess_exec(
        binary,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        output = await asyncio.wait_for(process.stdout.read(OUTPUT_LIMIT), VERSION_TIMEOUT_S)
        await asyncio.wait_for(process.wait(), VERSION_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        return ""
    return output.decode(errors="replace")


def _failed(message: str, line: Callable[[str], None]) -> Outcome:
    line(message)
    return states.FAILED, states.SETUP_FAILED, 0, message


async def run_step(
    step: model_pb2.SetupStep, version: str, env: dict[str, str], line: Callable[[str], None]
) -> Outcome | None:
    """Check the toolchain (`version`: the step's, placeholders replaced) on the job's PATH;
    the attempt's failure, or None when it is there."""
    chain = TOOLCHAINS.get(step.tool)
    if chain is None:
        return _failed(f"setup {step.tool}: not a toolchain this worker knows", line)
    path = env.get("PATH", "")
    binary = next((found for b in chain.binaries if (found := shutil.which(b, path=path))), None)
    if binary is None:
        wanted = f" {version}" if version else ""
        return _failed(
            f"setup {step.tool}{wanted}: {' or '.join(chain.binaries)} not found on PATH "
            "(this worker installs nothing)",
            line,
        )
    output = await _version_of(binary, chain.version_args, env)
    found = found_version(output)
    line(f"setup {step.tool}: {binary} {found or '(no version reported)'}")
    if version:
        parts = wanted_parts(version)
        if parts is None:
            return _failed(
                f"setup {step.tool}: cannot check version {version!r} (found {found or 'none'})", line
            )
        if parts and not satisfies(parts, found):
            return _failed(
                f"setup {step.tool}: version {version} wanted, {found or 'no version'} found ({binary})", line
            )
    if step.package_manager:
        manager = shutil.which(step.package_manager, path=path)
        if manager is None:
            return _failed(
                f"setup {step.tool}: package manager {step.package_manager} not found on PATH", line
            )
        reported = found_version(await _version_of(manager, ("--version",), env))
        line(f"setup {step.package_manager}: {manager} {reported or '(no version reported)'}")
    return None
