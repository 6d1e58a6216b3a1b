"""The ``[consent]`` configuration section, read in one place.

Per-task arguments win over these deployment-wide settings. Secrets live in the connection, and in
``ledger_secret``, which signs ledger records and is never repr'd.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.policies import DEFAULT_ENTRYPOINT

SECTION = "consent"
ENV_PREFIX = "AIRFLOW__CONSENT__"
# For this project's own test processes only, which change settings per test. Read once, here: a DAG
# file setting it later changes nothing.
LIVE_SETTINGS_VARIABLE = "AIRFLOW_CONSENT_LIVE_SETTINGS"


def _consent_environment() -> dict[str, str]:
    return {name: value for name, value in os.environ.items() if name.upper().startswith(ENV_PREFIX)}


# The deployment's [consent] environment as this process started. The cluster policy imports this
# module at ``import airflow`` (its entry point), before any DAG file is parsed.
_AT_START = _consent_environment()
_FROZEN = os.environ.get(LIVE_SETTINGS_VARIABLE) != "1"


def check_environment() -> None:
    """Refuse settings a DAG file changed: any ``AIRFLOW__CONSENT__*`` variable set, changed or
    removed since the process started is a ``ConsentConfigurationError`` naming it."""
    if not _FROZEN:
        return
    now = _consent_environment()
    if changed := sorted(n for n in now.keys() | _AT_START.keys() if now.get(n) != _AT_START.get(n)):
        raise ConsentConfigurationError(
            f"{', '.join(changed)} changed after this process started (by code in a DAG file?): [consent] "
            "settings come from the deployment's configuration, never from DAG code; remove the change"
        )


@dataclass(frozen=True)
class ConsentSettings:
    opa_conn_id: str | None
    policy_path: str | None
    entrypoint: str
    enforcement: str
    rule_enforcement: str
    ledger_url: str = ""
    dataset_config_path: str | None = None
    pinned_task_arguments: tuple[str, ...] = ()
    ledger_secret: str | None = field(default=None, repr=False)
    query_chunk_size: int = 5000


def settings() -> ConsentSettings:
    """Read ``[consent]`` from Airflow's configuration (env vars ``AIRFLOW__CONSENT__*`` included, as
    they were when the process started: see ``check_environment``)."""
    from airflow.configuration import conf

    check_environment()

    def option(name: str, fallback: str) -> str:
        return conf.get(SECTION, name, fallback=fallback) or fallback

    return ConsentSettings(
        opa_conn_id=option("opa_conn_id", "") or None,
        policy_path=option("policy_path", "") or None,
        entrypoint=option("entrypoint", DEFAULT_ENTRYPOINT),
        enforcement=option("enforcement", "deny"),
        rule_enforcement=option("rule_enforcement", ""),
        ledger_url=option("ledger_url", "") or default_ledger_url(),
        ledger_secret=option("ledger_secret", "").strip() or None,  # ledger_secret_cmd output ends in a newline
        query_chunk_size=_positive_int("query_chunk_size", option("query_chunk_size", "5000")),
        dataset_config_path=option("dataset_config_path", "") or None,
        pinned_task_arguments=tuple(
            name.strip() for name in option("pinned_task_arguments", "").split(",") if name.strip()
        ),
    )


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConsentConfigurationError(f"[{SECTION}] {name} must be a whole number of at least 1, not {text!r}")
    return value


# Gate arguments a platform team can pin to their [consent] values (``pinned_task_arguments``).
PINNABLE_TASK_ARGUMENTS = ("opa_conn_id", "policy_path", "entrypoint", "enforcement", "dataset_config_path")


def default_ledger_url() -> str:
    """``sqlite:///$AIRFLOW_HOME/consent_ledger.db``: one machine's ledger."""
    from airflow.configuration import AIRFLOW_HOME

    return f"sqlite:///{AIRFLOW_HOME}/consent_ledger.db"


TRAINING_TAGS = "training"
TRAINING_OPERATORS = "*TrainingOperator, *TrainingJobOperator, *TuningJobOperator"
TRAINING_OUTLET_PATTERNS = "model://*, models://*"
APPROVED_ASSET_PATTERNS = "consent://approved/*"
GOVERNED_URI_PREFIXES = ""  # off: only the training_* settings recognise training tasks


@dataclass(frozen=True)
class EnforcementSettings:
    """What the cluster policy and the run-time clearance enforce, and what they call a training task."""

    enforce_gates: bool
    enforce_clearance: bool
    training_tags: tuple[str, ...]
    training_operators: tuple[str, ...]
    training_outlet_patterns: tuple[str, ...]
    approved_asset_patterns: tuple[str, ...] = ()
    governed_uri_prefixes: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()


def enforcement_settings() -> EnforcementSettings:
    """Read the enforcement options of ``[consent]``; an unparsable switch counts as on and is reported."""
    from airflow.configuration import conf

    check_environment()

    problems: list[str] = []

    def switch(name: str) -> bool:
        try:
            return conf.getboolean(SECTION, name, fallback=True)
        except Exception as exc:  # fail closed: only an explicit False turns enforcement off
            problems.append(f"[{SECTION}] {name} is not a boolean, so it stays on: {exc}")
            return True

    def patterns(name: str, fallback: str) -> tuple[str, ...]:
        return tuple(p for p in conf.getlist(SECTION, name, fallback=fallback) or () if p)

    return EnforcementSettings(
        enforce_gates=switch("enforce_gates"),
        enforce_clearance=switch("enforce_clearance"),
        training_tags=patterns("training_tags", TRAINING_TAGS),
        training_operators=patterns("training_operators", TRAINING_OPERATORS),
        training_outlet_patterns=patterns("training_outlet_patterns", TRAINING_OUTLET_PATTERNS),
        approved_asset_patterns=patterns("approved_asset_patterns", APPROVED_ASSET_PATTERNS),
        governed_uri_prefixes=patterns("governed_uri_prefixes", GOVERNED_URI_PREFIXES),
        problems=tuple(problems),
    )
