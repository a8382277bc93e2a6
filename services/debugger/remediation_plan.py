"""Plans of typed actions: what each kind acts on, the parameters it takes, and the plan a
diagnosis's suggestions make. Bad plans are INVALID_ARGUMENT naming the field; actions this
deployment cannot run are FAILED_PRECONDITION naming what is missing."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence

from services.debugger.remediation import Action, ActionKind
from services.debugger.taxonomy import Remediation as Suggestion
from services.debugger.taxonomy import RemediationType
from services.runtime.errors import FailedPrecondition, InvalidArgument
from services.runtime.resource_names import NUMBER, IdRule, ResourceName

MAX_ACTIONS = 16
MAX_PARAMETERS = 16
MAX_PARAMETER_CHARS = 256
MAX_REASON_CHARS = 1024
# A memory limit is raised by at most this factor at once (an OOMKilled pod gets more
# memory, never unbounded memory).
MAX_MEMORY_FACTOR = 4.0
MAX_REPLICAS = 1000
# A re-run with backoff waits at most this long first (`delay`: `30s`, `2m`, `500ms`, `1h`).
MAX_DELAY_S = 3600.0
_DELAY = re.compile(r"^([0-9]{1,7}(?:\.[0-9]{1,3})?)(ms|s|m|h)?$")
_DELAY_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

# The pipeline's job keys: a job id, and `.<n>` for a matrix combination.
PIPELINE_JOB = ResourceName(
    "projects/{project}/pipelines/{pipeline}/runs/{run}/jobs/{job}",
    {"job": IdRule(r"[a-z][a-z0-9_-]{0,62}(\.[0-9]{1,3})?", "a job id, and `.<n>` for a matrix combination")},
)
PIPELINE_RUN = ResourceName("projects/{project}/pipelines/{pipeline}/runs/{run}")
ENVIRONMENT = ResourceName("namespaces/{namespace}/environments/{environment}")
# The secrets service's id rule: 1-200 letters, digits, `.`, `_` and `-`, from a letter.
SECRET = ResourceName(
    "secrets/{secret}",
    {
        "secret": IdRule(
            r"[A-Za-z][A-Za-z0-9._-]{0,199}", "1-200 letters, digits, '.', '_' and '-', from a letter"
        )
    },
)
DEPLOYMENT = ResourceName("namespaces/{namespace}/deployments/{deployment}")
MEMORY_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|K|M|G|T)?$")
# A container image reference: [registry[:port]/]path[:tag][@digest], no spaces or quotes.
IMAGE = re.compile(r"^[a-z0-9][A-Za-z0-9._/:@-]{0,254}$")

TARGETS: dict[ActionKind, ResourceName] = {
    ActionKind.PIPELINE_RERUN: PIPELINE_JOB,
    ActionKind.PIPELINE_RERUN_WITH_BACKOFF: PIPELINE_JOB,
    ActionKind.PIPELINE_CANCEL_RUN: PIPELINE_RUN,
    ActionKind.CONFIG_ROLLBACK: ENVIRONMENT,
    ActionKind.SECRET_ROTATE: SECRET,
    ActionKind.SECRET_PROMOTE_VERSION: SECRET,
    ActionKind.SECRET_DISABLE_VERSION: SECRET,
    ActionKind.KUBERNETES_RESTART: DEPLOYMENT,
    ActionKind.KUBERNETES_RAISE_MEMORY_LIMIT: DEPLOYMENT,
    ActionKind.KUBERNETES_ROLLBACK: DEPLOYMENT,
    ActionKind.KUBERNETES_SCALE: DEPLOYMENT,
}
# Parameters each kind needs; others it may take are in OPTIONAL.
REQUIRED: dict[ActionKind, tuple[str, ...]] = {
    ActionKind.CONFIG_ROLLBACK: ("revision",),
    ActionKind.SECRET_PROMOTE_VERSION: ("version",),
    ActionKind.SECRET_DISABLE_VERSION: ("version",),
    ActionKind.KUBERNETES_RAISE_MEMORY_LIMIT: ("container", "current_limit"),
    ActionKind.KUBERNETES_SCALE: ("replicas",),
    # The previous ReplicaSet's container and image (there is no cluster reader to find them).
    ActionKind.KUBERNETES_ROLLBACK: ("container", "image"),
}
OPTIONAL: dict[ActionKind, tuple[str, ...]] = {
    ActionKind.PIPELINE_RERUN_WITH_BACKOFF: ("delay",),
    ActionKind.KUBERNETES_RAISE_MEMORY_LIMIT: ("factor",),
    # `path.to.key=JSON value` the resolved config must hold afterwards (its verification).
    ActionKind.CONFIG_ROLLBACK: ("expect",),
    # The previous ReplicaSet's revision (`deployment.kubernetes.io/revision`).
    ActionKind.KUBERNETES_ROLLBACK: ("revision",),
}
EXPECT = "expect"
# Every kind may say how many consumers or replicas it affects (the policy weighs it).
BLAST_RADIUS = "blast_radius"
PIPELINE_KINDS = frozenset(
    {ActionKind.PIPELINE_RERUN, ActionKind.PIPELINE_RERUN_WITH_BACKOFF, ActionKind.PIPELINE_CANCEL_RUN}
)
# The executable kind each suggestion of a diagnosis becomes; the others (fix the code,
# investigate, pin a dependency) are for people.
FROM_SUGGESTION: dict[RemediationType, ActionKind] = {
    RemediationType.RERUN: ActionKind.PIPELINE_RERUN,
    RemediationType.RERUN_WITH_BACKOFF: ActionKind.PIPELINE_RERUN_WITH_BACKOFF,
    RemediationType.ROLLBACK_CONFIG: ActionKind.CONFIG_ROLLBACK,
    RemediationType.ROTATE_SECRET: ActionKind.SECRET_ROTATE,
    RemediationType.RAISE_MEMORY_LIMIT: ActionKind.KUBERNETES_RAISE_MEMORY_LIMIT,
}
# Suggestion parameters that are not the action's (a memory suggestion's advice).
_SUGGESTION_ONLY = frozenset({"suggested_limit", "secret"})


def parse_expectation(raw: str, field: str) -> tuple[list[str], object]:
    """`a.b=JSON` -> (["a", "b"], value); INVALID_ARGUMENT naming `field` otherwise."""
    path, sep, value = raw.partition("=")
    if not sep or not path or any(not part for part in path.split(".")):
        raise InvalidArgument.for_field(field, "must be path.to.key=JSON value")
    try:
        return path.split("."), json.loads(value)
    except ValueError:
        raise InvalidArgument.for_field(field, "the value after '=' must be JSON") from None


def delay_seconds(raw: str, field: str) -> float:
    """A backoff delay (`30s`, `2m`, `500ms`, `1h`, plain seconds) in seconds, at most MAX_DELAY_S."""
    found = _DELAY.match(raw.strip())
    if not found or float(found.group(1)) * _DELAY_UNITS[found.group(2)] > MAX_DELAY_S:
        raise InvalidArgument.for_field(
            field, f"must be a delay such as 30s, 2m or 500ms, at most {MAX_DELAY_S:.0f} s"
        )
    return float(found.group(1)) * _DELAY_UNITS[found.group(2)]


def _positive_int(value: str, field: str, maximum: int) -> int:
    if not NUMBER.matches(value) or int(value) > maximum:
        raise InvalidArgument.for_field(field, f"must be a whole number from 1 to {maximum}")
    return int(value)


def _check_parameters(action: Action, field: str) -> None:
    """`field` is the path of the parameters map in the request (`plan[0].parameters`)."""
    kind, parameters = action.kind, action.parameters
    if len(parameters) > MAX_PARAMETERS:
        raise InvalidArgument.for_field(field, f"at most {MAX_PARAMETERS}")
    allowed = {*REQUIRED.get(kind, ()), *OPTIONAL.get(kind, ()), BLAST_RADIUS}
    for name, value in parameters.items():
        path = f"{field}[{name[:64]!r}]"
        if name not in allowed:
            raise InvalidArgument.for_field(path, f"is not a parameter of {kind.value}")
        if len(value) > MAX_PARAMETER_CHARS:
            raise InvalidArgument.for_field(path, f"longer than {MAX_PARAMETER_CHARS} characters")
    for name in REQUIRED.get(kind, ()):
        if not parameters.get(name):
            raise InvalidArgument.for_field(f"{field}[{name!r}]", f"{kind.value} needs it")
    for name in ("revision", "version"):
        if name in parameters:
            _positive_int(parameters[name], f"{field}[{name!r}]", 10**15)
    if "replicas" in parameters:
        _positive_int(parameters["replicas"], f"{field}['replicas']", MAX_REPLICAS)
    if BLAST_RADIUS in parameters:
        _positive_int(parameters[BLAST_RADIUS], f"{field}[{BLAST_RADIUS!r}]", 10**6)
    if "delay" in parameters:
        delay_seconds(parameters["delay"], f"{field}['delay']")
    if EXPECT in parameters:
        parse_expectation(parameters[EXPECT], f"{field}[{EXPECT!r}]")
    if "current_limit" in parameters and not MEMORY_QUANTITY.match(parameters["current_limit"].strip()):
        raise InvalidArgument.for_field(
            f"{field}['current_limit']", "must be a memory quantity such as 512Mi"
        )
    if "image" in parameters and not IMAGE.match(parameters["image"]):
        raise InvalidArgument.for_field(
            f"{field}['image']", "must be a container image reference such as registry/app:1.2.3"
        )
    if "factor" in parameters:
        try:
            factor = float(parameters["factor"])
        except ValueError:
            factor = 0.0
        if not 1.0 < factor <= MAX_MEMORY_FACTOR:
            raise InvalidArgument.for_field(
                f"{field}['factor']", f"must be a number above 1 and at most {MAX_MEMORY_FACTOR}"
            )


def check_action(action: Action, field: str, *, target_field: str = "", parameters_field: str = "") -> None:
    """INVALID_ARGUMENT naming the request's field that is wrong (`plan[0].target`; an action
    made from a diagnosis names the request's `target` and `parameters`, where its target and
    parameters came from). Whether this deployment can execute it is decided at execution
    (NO_EXECUTOR names the peer it needs)."""
    if len(action.reason) > MAX_REASON_CHARS:
        raise InvalidArgument.for_field(f"{field}.reason", f"longer than {MAX_REASON_CHARS} characters")
    TARGETS[action.kind].parse(action.target, target_field or f"{field}.target")
    _check_parameters(action, parameters_field or f"{field}.parameters")


def check_plan(plan: Sequence[Action], field: str = "plan") -> None:
    """Every action of a plan checked (at least one, at most MAX_ACTIONS)."""
    if not plan:
        raise InvalidArgument.for_field(field, "needs at least one action")
    if len(plan) > MAX_ACTIONS:
        raise InvalidArgument.for_field(field, f"at most {MAX_ACTIONS} actions")
    for index, action in enumerate(plan):
        check_action(action, f"{field}[{index}]")


def check_derived_plan(plan: Sequence[Action]) -> None:
    """A plan made from a diagnosis checked, naming the request's `target` and `parameters`
    (the fields its actions came from) when they are wrong."""
    for index, action in enumerate(plan):
        check_action(action, f"plan[{index}]", target_field="target", parameters_field="parameters")


def from_suggestions(
    diagnosis: str, suggestions: Sequence[Suggestion], target: str, parameters: Mapping[str, str]
) -> list[Action]:
    """The plan a diagnosis's executable suggestions make, acting on `target`. A diagnosis that
    suggests nothing executable is FAILED_PRECONDITION (a person has to act)."""
    actions = []
    for suggestion in suggestions:
        kind = FROM_SUGGESTION.get(suggestion.type)
        if kind is None:
            continue
        merged = {k: v for k, v in suggestion.parameters.items() if k not in _SUGGESTION_ONLY}
        merged.update(parameters)
        allowed = {*REQUIRED.get(kind, ()), *OPTIONAL.get(kind, ()), BLAST_RADIUS}
        actions.append(
            Action(kind, target, {k: v for k, v in merged.items() if k in allowed}, suggestion.reason)
        )
        break  # the most useful suggestion only: the others are alternatives, not steps
    if not actions:
        raise FailedPrecondition(
            f"{diagnosis} suggests nothing executable: "
            + ", ".join(s.type.value for s in suggestions)
            + "; propose a plan of your own",
            reason="NOTHING_EXECUTABLE",
        )
    return actions
