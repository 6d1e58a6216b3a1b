"""Policy engines: a real OPA, as a local binary or a server behind an Airflow connection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EngineAnswer:
    """The entrypoint's raw value and what decided it."""

    result: Any
    opa_version: str | None
    policy_revision: str | None


class PolicyEngine(Protocol):
    """Evaluates one entrypoint over one input document; raises ``EngineError`` on any failure."""

    @property
    def name(self) -> str: ...

    def evaluate(self, policy_input: dict, entrypoint: str) -> EngineAnswer: ...

    async def aevaluate(self, policy_input: dict, entrypoint: str) -> EngineAnswer: ...


def describe_opa_errors(errors: object) -> str:
    """OPA's error list (from ``opa eval`` or the REST API) as one line per error with its location;
    anything not shaped like one is shown as it came."""
    if not isinstance(errors, list):
        return repr(errors)[:2000] if errors else ""
    lines = []
    for error in errors:
        if not isinstance(error, dict):
            lines.append(repr(error)[:500])
            continue
        location = error.get("location")
        located = location if isinstance(location, dict) else {}
        where = f"{located.get('file', '')}:{located.get('row', '')}: " if located else ""
        lines.append(f"{where}{error.get('code', 'error')}: {error.get('message', error)}")
    return "; ".join(lines)


def engine_for(opa_conn_id: str | None, policy_path: str | None = None) -> PolicyEngine:
    """The OPA server behind ``opa_conn_id``, else the local binary over ``policy_path`` (or the shipped policies)."""
    if opa_conn_id:
        from airflow_consent.hooks.opa import OpaHook

        return OpaHook(opa_conn_id=opa_conn_id)
    from airflow_consent.engines.local import LocalOpaEngine

    return LocalOpaEngine(policy_path=policy_path)
