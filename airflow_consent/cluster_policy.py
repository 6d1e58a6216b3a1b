"""Cluster policy: training tasks need a consent gate upstream, and clearance when they start.

Registered through the ``airflow.policy`` entry point (name ``airflow_consent``), so Airflow loads
this module at ``import airflow`` in every process. It therefore imports nothing from Airflow at
module level, not even ``airflow.policies.hookimpl``: importing this module first would then start
``import airflow``, which loads this entry point while the module is still half-executed, and pluggy
would register it without its hooks. The marker below is the same one (``airflow.policy``).
Settings, exceptions and the clearance code are imported when a policy runs.

A task is a *training task* when any of these holds ([consent] settings, comma-separated):

- its class, or any base class, matches ``training_operators`` (class name or dotted path; ``*``/``?``);
- one of its outlets has a URI or name matching ``training_outlet_patterns``;
- its DAG carries a tag in ``training_tags`` and the task is neither a gate nor upstream of a gate
  (tasks feeding a gate are data preparation).

A *gate* is a task whose class, or a base class, is named ``ConsentGateOperator`` or
``ConsentPolicySensor``, or that sets the class attribute ``is_consent_gate = True``.

- ``dag_policy``: with ``enforce_gates`` on (the default), a DAG with a training task that has no gate
  upstream raises ``AirflowClusterPolicyViolation`` naming every such task: the file is an import error.
  One exception: when a worker parses the file to run a task (the file changed after the dag-processor
  accepted it) and the clearance is on, the DAG loads and the clearance refuses its training tasks
  with the reason, instead of the task failing as "Dag not found" after minutes of rescheduling.
- ``task_policy``: with ``enforce_clearance`` on (the default), each training task's ``pre_execute`` is
  wrapped by the run-time clearance (``airflow_consent.clearance``).

Errors fail closed, but only for the DAG at hand: detection reads plain attributes, and a failure to
read the settings or to inspect a DAG becomes an ``AirflowClusterPolicyViolation`` naming this
package and the error — an import error of that one file, never a crash of the parser.
"""

from __future__ import annotations

import logging
import sys
from fnmatch import fnmatchcase
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from airflow_consent.config import EnforcementSettings

log = logging.getLogger(__name__)
hookimpl = pluggy.HookimplMarker("airflow.policy")  # == airflow.policies.hookimpl, without importing airflow

GATE_CLASS_NAMES = frozenset({"ConsentGateOperator", "ConsentPolicySensor"})
GATE_MARKER = "is_consent_gate"
CLEARANCE_MARKER = "__consent_clearance__"
_TASK_RUNNER = "airflow.sdk.execution_time.task_runner"


# --- recognising gates and training tasks -----------------------------------------------------


def _operator_class(task: Any) -> type:
    """The class the task runs as (a mapped task's underlying operator class)."""
    cls = getattr(task, "operator_class", None)
    return cls if isinstance(cls, type) else type(task)


def is_gate(task: Any) -> bool:
    """Whether ``task`` is a consent gate (operator or sensor), recognised without importing either."""
    cls = _operator_class(task)
    if getattr(cls, GATE_MARKER, False) is True:
        return True
    return any(base.__name__ in GATE_CLASS_NAMES for base in cls.__mro__)


def _class_matches(cls: type, patterns: tuple[str, ...]) -> str | None:
    for base in cls.__mro__:
        for name in (base.__name__, f"{base.__module__}.{base.__qualname__}"):
            for pattern in patterns:
                if fnmatchcase(name, pattern):
                    return f"operator class {cls.__name__} matches {pattern!r}"
    return None


def _outlet_matches(task: Any, patterns: tuple[str, ...]) -> str | None:
    for outlet in getattr(task, "outlets", None) or ():
        for value in (getattr(outlet, "uri", None), getattr(outlet, "name", None)):
            if isinstance(value, str):
                for pattern in patterns:
                    if fnmatchcase(value, pattern):
                        return f"outlet {value!r} matches {pattern!r}"
    return None


def training_reason(task: Any, settings: EnforcementSettings) -> str | None:
    """Why ``task`` is a training task, or None when it is not one."""
    if is_gate(task):
        return None
    if settings.training_operators and (reason := _class_matches(_operator_class(task), settings.training_operators)):
        return reason
    if settings.training_outlet_patterns and (reason := _outlet_matches(task, settings.training_outlet_patterns)):
        return reason
    dag = getattr(task, "dag", None)
    tags = {str(t) for t in (getattr(dag, "tags", None) or ())}
    if tagged := sorted(tags.intersection(settings.training_tags)):
        if not any(is_gate(t) for t in task.get_flat_relatives(upstream=False)):
            return f"DAG tag {tagged[0]!r}"
    return None


def upstream_gates(task: Any) -> list[Any]:
    """The gates upstream of ``task`` (direct or not), sorted by task id."""
    return sorted((t for t in task.get_flat_relatives(upstream=True) if is_gate(t)), key=lambda t: t.task_id)


def approved_schedule(dag: Any, settings: EnforcementSettings) -> list[str]:
    """URIs of the assets ``dag`` is scheduled on that consent gates publish (``approved_asset_patterns``).

    A DAG scheduled on a gate's approved asset is gated by that gate, in another DAG: its training
    tasks are cleared by the decision id the triggering event carries.
    """
    found: list[str] = []

    def walk(node: Any) -> None:
        for child in getattr(node, "objects", None) or ():
            walk(child)
        uri = getattr(node, "uri", None)
        if isinstance(uri, str) and any(fnmatchcase(uri, pattern) for pattern in settings.approved_asset_patterns):
            found.append(uri)

    walk(getattr(getattr(dag, "timetable", None), "asset_condition", None))
    return found


def ungated_training_tasks(dag: Any, settings: EnforcementSettings) -> dict[str, str]:
    """task id -> why it is a training task, for each training task of ``dag`` without a gate upstream."""
    if approved_schedule(dag, settings):
        return {}
    ungated = {}
    for task in dag.tasks:
        if (reason := training_reason(task, settings)) and not upstream_gates(task):
            ungated[task.task_id] = reason
    return ungated


def violation_message(dag_id: str, ungated: dict[str, str]) -> str:
    """The import error a DAG author reads: which tasks, why they count as training, what to do."""
    tasks = ", ".join(f"{task_id!r} ({reason})" for task_id, reason in sorted(ungated.items()))
    return (
        f"DAG {dag_id!r}: training task(s) {tasks} have no consent gate upstream. Put a "
        "ConsentGateOperator or ConsentPolicySensor from airflow_consent before each training task "
        "(gate >> train) so it only runs on partitions the consent policies allowed."
    )


# --- the hooks --------------------------------------------------------------------------------


_warned: set[str] = set()


def _settings() -> EnforcementSettings:
    from airflow_consent.config import enforcement_settings

    settings = enforcement_settings()
    for problem in set(settings.problems) - _warned:
        _warned.add(problem)
        log.warning("airflow-consent: %s", problem)
    return settings


def _violation(message: str) -> Exception:
    from airflow.exceptions import AirflowClusterPolicyViolation

    return AirflowClusterPolicyViolation(f"airflow-consent: {message}")


@hookimpl
def dag_policy(dag) -> None:
    """Refuse a DAG whose training tasks lack a consent gate upstream (``[consent] enforce_gates``)."""
    try:
        settings = _settings()
        if not settings.enforce_gates:
            return
        ungated = ungated_training_tasks(dag, settings)
    except Exception as exc:  # fail closed for this DAG, with a message that says why
        log.exception("airflow-consent could not check DAG %s", getattr(dag, "dag_id", dag))
        raise _violation(
            f"the consent cluster policy could not check DAG {getattr(dag, 'dag_id', dag)!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not ungated:
        return
    message = violation_message(dag.dag_id, ungated)
    if settings.enforce_clearance and _in_task_startup():
        # The file changed after the dag-processor accepted it (a gate removed). Refusing the DAG here
        # would only say "Dag not found" and reschedule the task for minutes; the clearance wrapped
        # around each of these training tasks refuses them now, with the reason.
        log.warning("airflow-consent: %s The run-time clearance will refuse these tasks.", message)
        return
    raise _violation(" ".join([message, *settings.problems]))


def _in_task_startup() -> bool:
    """Whether this parse is a worker loading the DAG file to run one of its tasks."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "parse" and frame.f_globals.get("__name__") == _TASK_RUNNER:
            return True
        frame = frame.f_back
    return False


@hookimpl
def task_policy(task) -> None:
    """Wrap a training task's ``pre_execute`` with the run-time clearance (``[consent] enforce_clearance``)."""
    try:
        settings = _settings()
        if not settings.enforce_clearance or training_reason(task, settings) is None:
            return
    except Exception as exc:
        log.exception("airflow-consent could not check task %s", getattr(task, "task_id", task))
        raise _violation(
            f"the consent cluster policy could not check task {getattr(task, 'task_id', task)!r}: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    install_clearance(task)


def install_clearance(task: Any) -> None:
    """Make ``task`` run the clearance before its own ``pre_execute`` (idempotent)."""
    if getattr(task, "is_mapped", False) or hasattr(task, "partial_kwargs"):
        _install_on_mapped(task)
        return
    own_hook = vars(task).get("pre_execute")  # another policy's wrapper, if any
    if getattr(own_hook, CLEARANCE_MARKER, False):
        return

    def pre_execute(context):
        from airflow_consent.clearance import enforce_clearance

        current = context.get("task") or task  # the copy the runner rendered, when there is one
        enforce_clearance(current, context)
        if own_hook is not None:
            return own_hook(context)
        return type(current).pre_execute(current, context)

    setattr(pre_execute, CLEARANCE_MARKER, True)
    object.__setattr__(task, "pre_execute", pre_execute)  # bypass BaseOperator's init-kwargs tracking


def _install_on_mapped(task: Any) -> None:
    """A mapped task is unmapped into a new operator in the worker: hook in through ``pre_execute=``."""
    previous = task.partial_kwargs.get("pre_execute")
    if getattr(previous, CLEARANCE_MARKER, False):
        return

    def pre_execute(context):
        from airflow_consent.clearance import enforce_clearance

        enforce_clearance(context["task"], context)
        if previous is not None:
            return previous(context)
        return None

    setattr(pre_execute, CLEARANCE_MARKER, True)
    task.partial_kwargs["pre_execute"] = pre_execute
