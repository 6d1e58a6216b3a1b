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


def settings() -> ConsentSettings:
    """Read ``[consent]`` from Airflow's configuration (env vars ``AIRFLOW__CONSENT__*`` included)."""
    from airflow.configuration import conf

    def option(name: str, fallback: str) -> str:
        return conf.get(SECTION, name, fallback=fallback) or fallback

    return ConsentSettings(
        opa_conn_id=option("opa_conn_id", "") or None,
        policy_path=option("policy_path", "") or None,
        entrypoint=option("entrypoint", DEFAULT_ENTRYPOINT),
    )
