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
- it *reads the governed lake*: ``governed_uri_prefixes`` is set and one of its inlets is under one
  of those prefixes — wherever the task is in the DAG (see below);
- its DAG carries a tag in ``training_tags`` and the task is neither a gate nor upstream of a gate
  (tasks feeding a gate are data preparation).

The governed lake (``governed_uri_prefixes``, empty = off) is deny by default for *readers*: a task
with an inlet under a governed prefix needs a gate upstream, whatever its name, class or tags.

- Inlets are what a task declares it reads: the ``uri`` and ``name`` of each ``Asset``, ``Asset.ref``
  and ``AssetAlias`` (members of ``AssetAll``/``AssetAny`` too), strings and path objects. Aliases and
  references by name resolve only at run time: their name is compared. Undeclared reads are invisible.
- A reader upstream of a gate is not data preparation (it read the lake before anything was
  checked): a gate downstream does not excuse it. Gate its inputs, or leave its zone out of the prefixes.
- Outlets do not count: writing into the lake is ingestion or data preparation, with or without a
  gate. A task that produces a model there is matched by ``training_outlet_patterns``.
- A reader downstream of a gate, or in a DAG scheduled on an approved asset, imports and is cleared at
  run time like any training task. Gates are never readers (``datasets`` are not inlets).
- The check is structural: whether the gate's ``datasets`` cover the inlet is not compared.

URIs are compared as locations (``normalized_location``, ``location_under``), every doubt counting as
inside: case-insensitive; ``s3a``/``s3n`` = ``s3``, ``gcs`` = ``gs``, an absolute path = ``file://``;
percent-escapes decoded; empty and ``.`` segments dropped, ``..`` both resolved and kept; query and
fragment ignored. A prefix matches whole segments (``s3://lake`` covers ``s3://lake/x``, never
``s3://lakehouse/x``; a trailing slash changes nothing); a prefix that cannot be parsed makes every DAG
with an inlet an import error naming it.

A *gate* is a task whose class, or a base class, is named ``ConsentGateOperator`` or
``ConsentPolicySensor``, or that sets the class attribute ``is_consent_gate = True``.

- ``dag_policy``: with ``enforce_gates`` on (the default), a DAG with a training task that has no gate
  upstream raises ``AirflowClusterPolicyViolation`` naming every such task: the file is an import error.
  One exception: when a worker parses the file to run a task (the file changed after the dag-processor
  accepted it) and the clearance is on, the DAG loads and the clearance refuses its training tasks
  with the reason, instead of the task failing as "Dag not found" after minutes of rescheduling.
- ``task_policy``: with ``enforce_clearance`` on (the default), each training task's ``pre_execute`` is
  wrapped by the run-time clearance (``airflow_consent.clearance``).

``DagBag`` calls ``dag_policy`` once per DAG, then ``task_policy`` once per task: both use the
settings ``dag_policy`` read and one walk of the DAG's graph (``TrainingScan``), so checking a DAG
takes time linear in its tasks and dependencies (800 chained tasks: a few milliseconds).

Errors fail closed, but only for the DAG at hand: detection reads plain attributes, and a failure to
read the settings or to inspect a DAG becomes an ``AirflowClusterPolicyViolation`` naming this
package and the error — an import error of that one file, never a crash of the parser.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import weakref
from collections.abc import Iterator
from fnmatch import fnmatchcase
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import pluggy

import airflow_consent.config  # noqa: F401 - snapshots the [consent] environment before any DAG file runs

if TYPE_CHECKING:
    from types import FrameType

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


@lru_cache(maxsize=1024)  # names only: a class's answer never changes (a DAG with 800 tasks has a few classes)
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


def _own_reason(task: Any, settings: EnforcementSettings) -> str | None:
    """Why ``task`` (not a gate) is a training task wherever it is in its DAG: class, outlets, governed inlets."""
    if settings.training_operators and (reason := _class_matches(_operator_class(task), settings.training_operators)):
        return reason
    if settings.training_outlet_patterns and (reason := _outlet_matches(task, settings.training_outlet_patterns)):
        return reason
    if settings.governed_uri_prefixes and (reason := governed_inlet(task, settings.governed_uri_prefixes)):
        return reason
    return None


def _training_tags(dag: Any, settings: EnforcementSettings) -> list[str]:
    return sorted({str(t) for t in (getattr(dag, "tags", None) or ())}.intersection(settings.training_tags))


def training_reason(task: Any, settings: EnforcementSettings) -> str | None:
    """Why ``task`` is a training task, or None when it is not one."""
    if is_gate(task):
        return None
    if reason := _own_reason(task, settings):
        return reason
    tagged = _training_tags(getattr(task, "dag", None), settings)
    if tagged and not any(is_gate(t) for t in task.get_flat_relatives(upstream=False)):
        return f"DAG tag {tagged[0]!r}"
    return None


class TrainingScan:
    """The training tasks of one DAG and which have a gate upstream, from one walk of its graph.

    The answers of ``training_reason`` and ``upstream_gates`` for every task, in time linear in tasks
    and dependencies: "a gate upstream" follows from the upstream tasks' answers (in topological
    order), "a gate downstream" from the downstream tasks' (in reverse). Tasks in a cycle (DagBag
    refuses those before any policy runs) count as having no gate either side.
    """

    def __init__(self, dag: Any, settings: EnforcementSettings):
        tasks: dict[str, Any] = dict(dag.task_dict)
        self.shape = _shape(tasks)  # ids, not tasks: a scan kept for the next hook does not keep the DAG alive
        self.walked = {task_id: id(task) for task_id, task in tasks.items()}
        gates = {task_id for task_id, task in tasks.items() if is_gate(task)}
        order = _topological_order(tasks)
        self.gated: set[str] = set()  # a gate upstream
        feeds_gate: set[str] = set()  # a gate downstream
        for marks, walk, relatives in (
            (self.gated, order, "upstream_task_ids"),
            (feeds_gate, reversed(order), "downstream_task_ids"),
        ):
            for task_id in walk:
                if any(r in gates or r in marks for r in getattr(tasks[task_id], relatives)):
                    marks.add(task_id)
        tagged = _training_tags(dag, settings)
        self.reasons: dict[str, str] = {}  # task id -> why it is a training task
        for task_id, task in tasks.items():
            if task_id in gates:
                continue
            if reason := _own_reason(task, settings):
                self.reasons[task_id] = reason
            elif tagged and task_id not in feeds_gate:
                self.reasons[task_id] = f"DAG tag {tagged[0]!r}"

    def ungated(self) -> dict[str, str]:
        """task id -> why it is a training task, for each training task without a gate upstream."""
        return {task_id: reason for task_id, reason in self.reasons.items() if task_id not in self.gated}

    def describes(self, dag: Any) -> bool:
        """Whether ``dag`` still has the tasks and dependencies this scan walked."""
        return _shape(dag.task_dict) == self.shape


def _shape(tasks: dict[str, Any]) -> frozenset:
    return frozenset((task_id, id(task), frozenset(task.upstream_task_ids)) for task_id, task in tasks.items())


def _topological_order(tasks: dict[str, Any]) -> list[str]:
    """Task ids, each after all its upstream tasks (Kahn's algorithm); tasks in a cycle are left out."""
    waiting = {task_id: len(task.upstream_task_ids & tasks.keys()) for task_id, task in tasks.items()}
    order = [task_id for task_id, count in waiting.items() if not count]
    for task_id in order:  # the list grows while it is walked
        for child in tasks[task_id].downstream_task_ids:
            if child in waiting:
                waiting[child] -= 1
                if not waiting[child]:
                    order.append(child)
    return order


# --- the governed lake ------------------------------------------------------------------------

Location = tuple[str, str, tuple[str, ...]]  # scheme, authority, path segments
_SCHEME_ALIASES = {"s3a": "s3", "s3n": "s3", "gcs": "gs"}
_PORT = re.compile(r":\d*$")


def normalized_location(uri: str, *, resolve_parents: bool = True) -> Location:
    """``uri`` as a comparable location: (scheme, authority, path segments), all case-folded.

    ``resolve_parents=False`` keeps ``..`` as a plain segment, as object stores do (the S3 key
    ``faces/../x`` is inside ``faces/``). Raises ``ValueError`` for what ``urllib`` cannot split.
    """
    text = uri.strip()
    for _ in range(8):  # percent-escapes decoded until nothing changes (``%252F`` too)
        decoded = unquote(text)
        if decoded == text:
            break
        text = decoded
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    authority = parts.netloc.lower().rstrip(".")
    if not scheme and (authority or parts.path.startswith("/")):
        scheme = "file"
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    segments: list[str] = []
    for segment in parts.path.casefold().split("/"):
        if segment == ".." and resolve_parents:
            if segments:
                segments.pop()
        elif segment not in ("", "."):
            segments.append(segment)
    if scheme == "file" and authority == "localhost":
        authority = ""
    elif scheme not in ("", "file") and not authority and segments:
        authority = segments.pop(0)  # "s3:/lake/x", "s3:///lake/x": the bucket is the first segment
    return scheme, authority, tuple(segments)


def location_under(location: Location, prefix: Location) -> bool:
    """Whether ``location`` is ``prefix`` or inside it, on whole path segments.

    A prefix without user info (``user@``) or port covers every user and port of its host.
    """
    scheme, authority, segments = prefix
    if location[0] != scheme:
        return False
    if not authority and not segments:  # "s3://", "/": the whole scheme
        return True
    host = location[1] if "@" in authority else location[1].rpartition("@")[2]
    host = host if _PORT.search(authority) else _PORT.sub("", host)
    return host == authority and location[2][: len(segments)] == segments


@lru_cache(maxsize=16)
def _governed_locations(prefixes: tuple[str, ...]) -> tuple[tuple[str, Location], ...]:
    locations = []
    for prefix in prefixes:
        try:
            locations.append((prefix, normalized_location(prefix)))
        except ValueError as exc:  # fail closed: every DAG with an inlet says so until it is fixed
            raise ValueError(f"[consent] governed_uri_prefixes: {prefix!r} is not a URI: {exc}") from exc
    return tuple(locations)


def _declared_uris(values: Any) -> Iterator[str]:
    """The URIs and names of a task's inlets, conditions and path objects included."""
    if isinstance(values, (str, os.PathLike)) or not isinstance(values, (list, tuple, set, frozenset)):
        values = [values]  # a mapped task's partial(inlets=...) is stored as given
    for value in values:
        if isinstance(value, str):
            yield value
            continue
        found = False
        for attribute in ("uri", "name"):
            if isinstance(text := getattr(value, attribute, None), str):
                found = True
                yield text
        if members := getattr(value, "objects", None):  # AssetAll / AssetAny
            yield from _declared_uris(list(members))
        elif not found and isinstance(value, os.PathLike):
            yield str(value)


def governed_inlet(task: Any, prefixes: tuple[str, ...]) -> str | None:
    """Why ``task`` reads the governed lake (its first inlet under one of ``prefixes``), or None."""
    inlets = getattr(task, "inlets", None)
    if not inlets:
        return None
    governed = _governed_locations(prefixes)
    for uri in _declared_uris(inlets):
        try:  # ".." as a file system resolves it and as an object store keeps it: either may be the lake
            locations = {normalized_location(uri), normalized_location(uri, resolve_parents=False)}
        except ValueError:
            continue  # not a location (a label): Airflow refuses such URIs on an Asset
        for prefix, prefix_location in governed:
            if any(location_under(location, prefix_location) for location in locations):
                return f"inlet {uri!r} is in the governed lake {prefix!r}"
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
    parse = _parse_of(dag, settings)
    return (parse.scan(dag) if parse else TrainingScan(dag, settings)).ungated()


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


class _Parse:
    """The settings read for one DAG by ``dag_policy``, and its scan, reused by the ``task_policy`` calls
    ``DagBag.bag_dag`` makes next for each of its tasks: settings read once, the graph walked once."""

    def __init__(self, dag: Any, settings: EnforcementSettings):
        self.dag = weakref.ref(dag)
        self.settings = settings
        self._scan: TrainingScan | None = None
        self._checked = False

    def scan(self, dag: Any) -> TrainingScan:
        if self._scan is None:
            self._scan = TrainingScan(dag, self.settings)
        return self._scan

    def reason(self, task: Any) -> str | None:
        """``training_reason(task, self.settings)``, from the scan."""
        dag = task.dag
        scan = self.scan(dag)
        if not self._checked:  # once: another cluster policy may have changed the DAG after ours ran
            self._checked = True
            if not scan.describes(dag):
                scan = self._scan = TrainingScan(dag, self.settings)
        task_id = task.task_id
        if scan.walked.get(task_id) != id(task):  # a task added since: on its own
            return training_reason(task, self.settings)
        return scan.reasons.get(task_id)


_parses = threading.local()  # the DAG this thread's DagBag is bagging


def _begin_parse(dag: Any, settings: EnforcementSettings) -> None:
    try:
        _parses.current = _Parse(dag, settings)
    except TypeError:  # not weak-referenceable: each hook reads and walks for itself
        _parses.current = None


def _parse_of(dag: Any, settings: EnforcementSettings | None = None) -> _Parse | None:
    """This thread's parse of ``dag`` (read with ``settings``, when given), if ``dag_policy`` began one."""
    parse = getattr(_parses, "current", None)
    if parse is None or dag is None or parse.dag() is not dag:
        return None
    return parse if settings is None or settings == parse.settings else None


def _violation(message: str) -> Exception:
    from airflow.exceptions import AirflowClusterPolicyViolation

    return AirflowClusterPolicyViolation(f"airflow-consent: {message}")


@hookimpl
def dag_policy(dag) -> None:
    """Refuse a DAG whose training tasks lack a consent gate upstream (``[consent] enforce_gates``)."""
    try:
        settings = _settings()
        _begin_parse(dag, settings)
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
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "parse" and frame.f_globals.get("__name__") == _TASK_RUNNER:
            return True
        frame = frame.f_back
    return False


@hookimpl
def task_policy(task) -> None:
    """Wrap a training task's ``pre_execute`` with the run-time clearance (``[consent] enforce_clearance``)."""
    try:
        if parse := _parse_of(getattr(task, "dag", None)):
            if not parse.settings.enforce_clearance or parse.reason(task) is None:
                return
        else:
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
