"""The ``[consent]`` configuration section, read in one place.

Per-task arguments win over these deployment-wide settings; secrets live only in the connection.
"""

from __future__ import annotations

from dataclasses import dataclass

from airflow_consent.policies import DEFAULT_ENTRYPOINT

SECTION = "consent"


@dataclass(frozen=True)
class ConsentSettings:
    opa_conn_id: str | None
    policy_path: str | None
    entrypoint: str
    enforcement: str
    rule_enforcement: str
    ledger_url: str = ""


def settings() -> ConsentSettings:
    """Read ``[consent]`` from Airflow's configuration (env vars ``AIRFLOW__CONSENT__*`` included)."""
    from airflow.configuration import conf

    def option(name: str, fallback: str) -> str:
        return conf.get(SECTION, name, fallback=fallback) or fallback

    return ConsentSettings(
        opa_conn_id=option("opa_conn_id", "") or None,
        policy_path=option("policy_path", "") or None,
        entrypoint=option("entrypoint", DEFAULT_ENTRYPOINT),
        enforcement=option("enforcement", "deny"),
        rule_enforcement=option("rule_enforcement", ""),
        ledger_url=option("ledger_url", "") or default_ledger_url(),
    )


def default_ledger_url() -> str:
    """``sqlite:///$AIRFLOW_HOME/consent_ledger.db``: one machine's ledger."""
    from airflow.configuration import AIRFLOW_HOME

    return f"sqlite:///{AIRFLOW_HOME}/consent_ledger.db"


TRAINING_TAGS = "training"
TRAINING_OPERATORS = "*TrainingOperator, *TrainingJobOperator, *TuningJobOperator"
TRAINING_OUTLET_PATTERNS = "model://*, models://*"


@dataclass(frozen=True)
class EnforcementSettings:
    """What the cluster policy and the run-time clearance enforce, and what they call a training task."""

    enforce_gates: bool
    enforce_clearance: bool
    training_tags: tuple[str, ...]
    training_operators: tuple[str, ...]
    training_outlet_patterns: tuple[str, ...]


def enforcement_settings() -> EnforcementSettings:
    """Read the enforcement options of ``[consent]``; an unparsable boolean raises (callers fail closed)."""
    from airflow.configuration import conf

    def patterns(name: str, fallback: str) -> tuple[str, ...]:
        value = conf.get(SECTION, name, fallback=fallback)
        return tuple(p.strip() for p in (fallback if value is None else value).split(",") if p.strip())

    return EnforcementSettings(
        enforce_gates=conf.getboolean(SECTION, "enforce_gates", fallback=True),
        enforce_clearance=conf.getboolean(SECTION, "enforce_clearance", fallback=True),
        training_tags=patterns("training_tags", TRAINING_TAGS),
        training_operators=patterns("training_operators", TRAINING_OPERATORS),
        training_outlet_patterns=patterns("training_outlet_patterns", TRAINING_OUTLET_PATTERNS),
    )
