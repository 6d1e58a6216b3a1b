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
            {
                "integration-name": _OPA,
                "external-doc-url": "https://www.openpolicyagent.org/docs/",
                "tags": ["software"],
            }
        ],
        "operators": [
            {
                "integration-name": _OPA,
                "python-modules": ["airflow_consent.operators.consent", "airflow_consent.operators.audit"],
            }
        ],
        "hooks": [{"integration-name": _OPA, "python-modules": ["airflow_consent.hooks.opa"]}],
        "plugins": [{"name": "airflow_consent", "plugin-class": "airflow_consent.plugin.ConsentPlugin"}],
        "connection-types": [
            {
                "hook-class-name": "airflow_consent.hooks.opa.OpaHook",
                "hook-name": _OPA,
                "connection-type": "opa",
                "conn-fields": {
                    "timeout": {"label": "Timeout (seconds)", "schema": {"type": ["number", "null"], "default": 30}},
                    "retries": {
                        "label": "Retries per evaluation",
                        "schema": {"type": ["integer", "null"], "default": 2},
                    },
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
                    "ledger_url": {
                        "description": "SQLAlchemy URL of the decision ledger, a database of its own (not Airflow's): "
                        "sqlite:///PATH or postgresql://USER:PASSWORD@HOST/DB (psycopg 3, the 'postgres' extra). "
                        "Empty: sqlite:///$AIRFLOW_HOME/consent_ledger.db.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "postgresql://consent:secret@db.example.com/consent_ledger",
                        "default": "",
                        "sensitive": True,
                    },
                    "ledger_secret": {
                        "description": "The deployment's secret that signs every ledger record (HMAC-SHA256), so "
                        "clearance accepts only records a consent gate appended, not rows written into the database "
                        "by anyone else. Set the same value on every machine (ledger_secret_cmd and "
                        "ledger_secret_secret work). Empty: a random key in $AIRFLOW_HOME/consent_ledger.key, "
                        "created on first use: enough for one machine.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": None,
                        "default": "",
                        "sensitive": True,
                    },
                    "fingerprint_cache": {
                        "description": "SQLite file in which the content SHA-256 of data files is remembered by what "
                        "the store proves about each file (local: device, inode, size, mtime, ctime; S3: ETag, "
                        "version, last-modified, size), each entry signed with a key derived from the ledger key, so "
                        "that the next gate and the run-time clearance do not read unchanged files again. Empty: "
                        "$AIRFLOW_HOME/consent_fingerprints.db. off (false, no, none, 0): every byte is read every "
                        "time. A broken or unreadable file only costs reading again.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/var/lib/airflow/consent_fingerprints.db",
                        "default": "",
                    },
                    "query_chunk_size": {
                        "description": "Partitions per OPA query: a gate over more partitions asks in chunks of this "
                        "many (each partition decided whole within its chunk), so neither the gate nor OPA holds the "
                        "whole input at once.",
                        "version_added": "0.1.0",
                        "type": "integer",
                        "example": "2000",
                        "default": "5000",
                    },
                    "dataset_config_path": {
                        "description": "Directory of the datasets' evidence configurations: <dataset>.json (columns, "
                        "revocation list, Great Expectations suite) per dataset name. A dataset without one is judged "
                        "on its manifests alone. Empty: no evidence is measured. Operators may override it.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "/opt/airflow/dags/datasets",
                        "default": "",
                    },
                    "enforce_gates": {
                        "description": "Cluster policy: a DAG with a training task that has no consent gate "
                        "(ConsentGateOperator or ConsentPolicySensor) upstream fails to import. Off only when "
                        "set to False explicitly.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": None,
                        "default": "True",
                    },
                    "enforce_clearance": {
                        "description": "Run-time clearance: a training task refuses to start unless the ledger "
                        "holds an allow decision of this DAG run for each partition its upstream gates check, "
                        "with the fingerprint now on disk. Off only when set to False explicitly.",
                        "version_added": "0.1.0",
                        "type": "boolean",
                        "example": None,
                        "default": "True",
                    },
                    "training_tags": {
                        "description": "DAG tags, comma-separated, that make a DAG a training DAG: each of its "
                        "tasks that is not a gate and does not feed a gate is a training task.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "training, ml-training",
                        "default": "training",
                    },
                    "training_operators": {
                        "description": "Operator classes, comma-separated, that are training tasks wherever they "
                        "appear: a class name or dotted path of the class or any base class; * and ? wildcards.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "SageMakerTrainingOperator, mycompany.ml.operators.*",
                        "default": "*TrainingOperator, *TrainingJobOperator, *TuningJobOperator",
                    },
                    "training_outlet_patterns": {
                        "description": "Asset URI (or name) patterns, comma-separated, with * and ? wildcards: a "
                        "task with a matching outlet produces a model and is a training task.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "model://*, s3://ml-models/*",
                        "default": "model://*, models://*",
                    },
                    "approved_asset_patterns": {
                        "description": "Asset URI patterns, comma-separated, of the approved assets gates publish: a "
                        "DAG scheduled on one is gated by that gate, and its training tasks are cleared by the "
                        "decision id the triggering event carries.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "consent://approved/*",
                        "default": "consent://approved/*",
                    },
                    "governed_uri_prefixes": {
                        "description": "The governed lake, deny by default: URI prefixes, comma-separated. Any task "
                        "(whatever its name, class or tags) with an inlet under one of them is a training task: it "
                        "needs a consent gate upstream, wherever it is in the DAG, and gets the run-time clearance. "
                        "Outlets alone (writing into the lake) do not count. URIs are compared normalised (case, "
                        "duplicate slashes, . and .., percent-escapes, s3a/s3n = s3) on whole path segments: "
                        "s3://lake covers s3://lake/x, not s3://lakehouse/x. Empty: off.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "s3://lake/curated, /mnt/lake",
                        "default": "",
                    },
                    "enforcement": {
                        "description": "Default enforcement mode of every rule: deny (blocks), warn (passes; "
                        "violations logged and reported) or dryrun (passes; violations only recorded). A gate's "
                        "own enforcement argument replaces this default; rule_enforcement overrides both.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "warn",
                        "default": "deny",
                    },
                    "pinned_task_arguments": {
                        "description": "Gate arguments a DAG author may not set, comma-separated, from "
                        "opa_conn_id, policy_path, entrypoint, enforcement, dataset_config_path: a gate that sets "
                        "one is an import error and fails at run time, so every gate uses the [consent] value.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "opa_conn_id, policy_path, entrypoint, enforcement",
                        "default": "",
                    },
                    "rule_enforcement": {
                        "description": "Per-rule modes, RULE_ID=MODE separated by commas, winning over every "
                        "other setting: ship a new rule in dryrun first.",
                        "version_added": "0.1.0",
                        "type": "string",
                        "example": "PROV-004=warn, EVIDENCE-001=dryrun",
                        "default": "",
                    },
                },
            }
        },
    }
