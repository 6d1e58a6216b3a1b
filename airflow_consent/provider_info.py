"""Provider registration: what ``apache_airflow_provider`` tells Airflow about this package."""

from __future__ import annotations

from airflow_consent import __version__

_OPA = "Open Policy Agent"


def get_provider_info() -> dict:
    """The provider-info document Airflow's ProvidersManager reads."""
    return {
        "package-name": "airflow-consent",
        "name": "Consent gates",
        "description": "Gates that block ML training unless every input partition passes consent and "
        "provenance policies evaluated by Open Policy Agent.",
        "versions": [__version__],
        "integrations": [
            {"integration-name": _OPA, "external-doc-url": "https://www.openpolicyagent.org/docs/", "tags": ["software"]}
        ],
        "operators": [{"integration-name": _OPA, "python-modules": ["airflow_consent.operators.consent"]}],
        "hooks": [{"integration-name": _OPA, "python-modules": ["airflow_consent.hooks.opa"]}],
        "connection-types": [
            {
                "hook-class-name": "airflow_consent.hooks.opa.OpaHook",
                "hook-name": _OPA,
                "connection-type": "opa",
                "conn-fields": {
                    "timeout": {"label": "Timeout (seconds)", "schema": {"type": ["number", "null"], "default": 30}},
                    "retries": {"label": "Retries per evaluation", "schema": {"type": ["integer", "null"], "default": 2}},
                    "ca_bundle": {"label": "CA bundle path (https)", "schema": {"type": ["string", "null"]}},
                    "client_cert": {"label": "Client certificate path (mTLS)", "schema": {"type": ["string", "null"]}},
                    "client_key": {"label": "Client key path (mTLS)", "schema": {"type": ["string", "null"]}},
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["login", "extra"],
                    "relabeling": {"password": "Bearer token", "schema": "Scheme (http or https)"},
                    "placeholders": {"host": "opa.example.com", "port": "8181", "schema": "https"},
                },
            }
        ],
        "config": {
            "consent": {
                "description": "Deployment-wide settings of the consent gates.",
                "options": {
                    "opa_conn_id": {
                        "description": "Connection id of the OPA server gates use when a task names none. "
                        "Empty: evaluate the shipped policies with a local opa binary.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "opa_default",
                        "default": "",
                    },
                    "policy_path": {
                        "description": "Policies for the local engine. Empty: the policies shipped with the package.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/policies",
                        "default": "",
                    },
                    "entrypoint": {
                        "description": "The policy entrypoint returning the decision for all partitions.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": None,
                        "default": "consent/main/decision",
                    },
                },
            }
        },
    }
