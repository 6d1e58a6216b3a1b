"""The policy contract: what the gate sends to OPA and what it gets back.

``PolicyInput`` is the one JSON document of a batched query; its JSON Schema is generated into
``policies/schemas/input.json`` (``python -m airflow_consent.schema``) and used by
``opa check --strict``. ``Manifest`` is what a partition claims about its consent and provenance.
``GateReport`` is what one gate evaluation decided, pushed to XCom and printed in the logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

MANIFEST_VERSION = "1"


class _Strict(BaseModel):
    """Unknown fields are errors: a typo in a manifest must not silently drop a claim."""

    model_config = ConfigDict(extra="forbid")


# --- manifest: what a partition claims -------------------------------------------------------


class Consent(_Strict):
    """The consent under which the data subjects' data was collected."""

    legal_basis: Literal[
        "consent", "contract", "legitimate_interest", "legal_obligation", "public_task", "vital_interest"
    ]
    purposes: list[str] = Field(description="purposes the subjects agreed to, from the purpose taxonomy")
    scope: Literal["first_party", "third_party"] = Field(
        description="first_party: only the collector may use the data; third_party: sharing was agreed"
    )
    terms: str | None = Field(default=None, description="the terms or notice the consent was given under")
    collected_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    withdrawn_at: AwareDatetime | None = None
    biometric: bool = Field(description="the data contains biometric data (faces, fingerprints, voice prints)")
    biometric_opt_in: bool = Field(default=False, description="subjects explicitly opted in to biometric processing")
    minors: bool = Field(description="the data may contain data of minors")
    parental_consent: bool = Field(default=False, description="verified parental consent exists for minors")
    jurisdictions: list[str] = Field(default_factory=list, description="ISO 3166 codes where subjects live")


class CustodyStep(_Strict):
    """One hand-over of the data between holders."""

    holder: str
    received_at: AwareDatetime
    transfer: str = Field(description="how the data was handed over, e.g. 'sftp', 'api-export'")


class Provenance(_Strict):
    """Where the data came from and under what terms it is held."""

    source: str = Field(description="the originating source, as listed in the approved-sources reference data")
    collection_method: str
    acquired_at: AwareDatetime
    license: str = Field(description="license identifier, as listed in the licenses reference data")
    data_sharing_agreement: str | None = Field(default=None, description="id of the agreement covering the transfer")
    chain_of_custody: list[CustodyStep] = Field(default_factory=list)
    attested_digest: str | None = Field(
        default=None, description="the partition fingerprint the data provider attested ('sha256:...')"
    )


class Manifest(_Strict):
    """A partition's claims, read from its sidecar file or its Parquet key-value metadata."""

    manifest_version: Literal["1"]
    consent: Consent
    provenance: Provenance


# --- policy input -----------------------------------------------------------------------------


class ManifestProblem(_Strict):
    """Why a partition's manifest could not be used: the file and the field at fault."""

    file: str
    field: str | None = Field(default=None, description="dotted path of the offending field, if any")
    message: str


class PartitionInput(_Strict):
    """One partition as the policies see it."""

    id: str = Field(description="'<dataset>/<key>=<value>/...', unique within one query")
    dataset: str
    keys: dict[str, str]
    uri: str
    fingerprint: str = Field(description="'sha256:<hex>' over the names, sizes and contents of the data files")
    files: int = Field(ge=0, description="number of data files in the partition")
    manifest: Manifest | None = Field(description="None when missing or invalid; see manifest_problems")
    manifest_source: str | None = Field(default=None, description="file the manifest was read from")
    manifest_problems: list[ManifestProblem] = Field(default_factory=list)
    evidence: dict[str, object] = Field(default_factory=dict, description="measured facts about the contents")


class Requester(_Strict):
    """Who asks: the DAG run's owner or the user who triggered it."""

    kind: Literal["dag", "user", "cli"]
    id: str


class GateRequest(_Strict):
    """The purpose of this training run and the run that asks."""

    purpose: str = Field(description="a purpose id from the purpose taxonomy (policies reference data)")
    model: str | None = Field(default=None, description="the model being trained")
    dag_id: str | None = None
    run_id: str | None = None
    task_id: str | None = None
    requested_by: Requester | None = None
    evaluated_at: AwareDatetime = Field(description="the time consent validity is judged at")


class PolicyInput(_Strict):
    """The single input document of one batched OPA query."""

    request: GateRequest
    partitions: list[PartitionInput]


# --- decision ---------------------------------------------------------------------------------


class Violation(BaseModel):
    """One rule's finding against one partition, built from the rule's METADATA."""

    rule_id: str
    title: str
    severity: Literal["critical", "high", "medium", "low"]
    message: str
    remediation: str
    regulation: list[str]
    recoverable: bool = True


class PartitionDecision(BaseModel):
    """The policies' verdict on one partition."""

    id: str
    allow: bool
    violations: list[Violation]


class PolicyDecision(BaseModel):
    """What the entrypoint returns for the whole input."""

    allow: bool
    partitions: list[PartitionDecision]


class DecidedPartition(BaseModel):
    """A partition with its verdict, as it appears in the gate report."""

    id: str
    uri: str
    fingerprint: str
    allow: bool
    violations: list[Violation]


class GateReport(BaseModel):
    """Everything one gate evaluation decided; JSON in XCom, rendered text in the logs."""

    decision_id: str
    allow: bool
    purpose: str
    entrypoint: str
    engine: str
    opa_version: str | None
    policy_revision: str | None
    evaluated_at: datetime
    duration_ms: float
    partitions: list[DecidedPartition]

    @property
    def denied(self) -> list[DecidedPartition]:
        return [p for p in self.partitions if not p.allow]
