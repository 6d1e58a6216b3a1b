"""The policy contract: what the gate sends to OPA and what it gets back.

``PolicyInput`` is the one JSON document of a batched query; its JSON Schema is generated into
``policies/schemas/input.json`` (``python -m airflow_consent.schema``) and used by
``opa check --strict``. ``Manifest`` is what a partition claims about its consent and provenance.
``GateReport`` is what one gate evaluation decided, pushed to XCom and printed in the logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

MANIFEST_VERSION: Literal["1"] = "1"  # the version of a single-license manifest (the sample data's)
MANIFEST_VERSIONS = ("1", "2")
# Comparison operators of a partition filter (pyarrow's DNF filter format).
FILTER_OPERATORS = frozenset({"=", "==", "!=", "<", ">", "<=", ">=", "in", "not in"})


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


class GeneratingModel(_Strict):
    """For synthetic data: the model that generated it and the terms its outputs are under."""

    model: str = Field(description="the generating model's id and version, e.g. 'gpt-4o-2024-08-06'")
    provider: str | None = Field(default=None, description="who operates or publishes the model, e.g. 'openai'")
    terms: str = Field(
        description="the terms the model's outputs are under, as listed in the licenses reference data "
        "(e.g. 'openai-terms', 'Apache-2.0'); they must permit the purpose like any license"
    )
    terms_url: str | None = Field(default=None, description="where the terms can be read")


class UpstreamDataset(_Strict):
    """A dataset the partition's data was derived from (filtered, annotated, translated, distilled)."""

    name: str
    uri: str | None = None
    licenses: list[str] = Field(
        min_length=1, description="every license the upstream dataset is under; each must permit the purpose"
    )
    terms_url: str | None = Field(default=None, description="where the upstream dataset's terms can be read")


# Provenance fields a manifest_version 1 manifest does not have (it names one license in "license").
_VERSION_2_PROVENANCE = ("licenses", "terms_url", "generated_by", "upstream")


class Provenance(_Strict):
    """Where the data came from and under what terms it is held.

    Version 1 names one license (``license``); version 2 names every license the data is under
    (``licenses``), the generating model of synthetic data and the datasets it was derived from. Every
    license named anywhere here must permit the purpose.
    """

    source: str = Field(description="the originating source, as listed in the approved-sources reference data")
    collection_method: str
    acquired_at: AwareDatetime
    license: str | None = Field(
        default=None,
        description="manifest_version 1 (required there, absent in 2): the license id, as listed in the licenses "
        "reference data (an SPDX id such as 'CC-BY-4.0', or a term such as 'research-only')",
    )
    licenses: list[str] = Field(
        default_factory=list,
        description="manifest_version 2 (at least one): every license the data is under, as listed in the licenses "
        "reference data; all of them must permit the purpose",
    )
    terms_url: str | None = Field(default=None, description="manifest_version 2: where the license or terms text is")
    generated_by: GeneratingModel | None = Field(
        default=None, description="manifest_version 2: for synthetic data, the model that generated it"
    )
    upstream: list[UpstreamDataset] = Field(
        default_factory=list, description="manifest_version 2: the datasets this data was derived from"
    )
    data_sharing_agreement: str | None = Field(default=None, description="id of the agreement covering the transfer")
    chain_of_custody: list[CustodyStep] = Field(default_factory=list)
    attested_digest: str | None = Field(
        default=None, description="the partition fingerprint the data provider attested ('sha256:...')"
    )

    @model_serializer(mode="wrap")
    def _without_unused_license_fields(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """A version 1 manifest dumps as version 1 (no empty version 2 fields), version 2 without ``license``."""
        dumped = handler(self)
        unused = {name for name in ("license", *_VERSION_2_PROVENANCE) if dumped.get(name) in (None, [])}
        return {name: value for name, value in dumped.items() if name not in unused}


class Manifest(_Strict):
    """A partition's claims, read from its sidecar file or its Parquet key-value metadata.

    ``manifest_version`` "1" names one ``provenance.license``; "2" lists ``provenance.licenses`` and may
    name the generating model, upstream datasets and a terms URL. A manifest using a field of the
    other version is invalid, naming the field.
    """

    manifest_version: Literal["1", "2"]
    consent: Consent
    provenance: Provenance

    @model_validator(mode="after")
    def _provenance_of_its_version(self) -> Manifest:
        provenance = self.provenance
        if self.manifest_version == "1":
            if provenance.license is None:
                given = "license" in provenance.model_fields_set
                raise _version_error(
                    "license", "Input should be a valid string (got null)" if given else "required field is missing"
                )
            for name in _VERSION_2_PROVENANCE:
                if getattr(provenance, name) not in (None, []):
                    raise _version_error(
                        name, f"'{name}' is a field of manifest_version '2'; this manifest is version '1'"
                    )
        else:
            if provenance.license is not None:
                raise _version_error(
                    "license",
                    "manifest_version '2' lists every license in provenance.licenses "
                    "(one license in 'license' is version '1')",
                )
            if not provenance.licenses:
                raise _version_error(
                    "licenses", "required field is missing: manifest_version '2' lists at least one license"
                )
        return self


MANIFEST_VERSION_ERROR = "manifest_version_field"


def _version_error(field: str, message: str) -> PydanticCustomError:
    """An error about provenance.<field> that depends on the manifest version; ``ctx.field`` names it."""
    return PydanticCustomError(MANIFEST_VERSION_ERROR, message, {"field": f"provenance.{field}"})


# --- policy input -----------------------------------------------------------------------------


class ManifestProblem(_Strict):
    """Why a partition's manifest could not be used: the file and the field at fault."""

    file: str
    field: str | None = Field(default=None, description="dotted path of the offending field, if any")
    message: str


# --- evidence: what a partition contains, measured -------------------------------------------


class EvidenceProblem(_Strict):
    """Why a partition's evidence could not be measured: the file and the column, setting or expectation at fault."""

    file: str
    field: str | None = Field(default=None, description="the column, setting or expectation at fault, if any")
    message: str


class ConsentFlagRows(_Strict):
    """How many rows carry exactly this combination of consent flags."""

    purposes: list[str] = Field(description="the purposes whose consent flag is true on these rows, sorted")
    rows: int = Field(ge=0)


class RevokedSubjects(_Strict):
    """Rows whose subject is on the dataset's revocation list."""

    source: str = Field(description="the revocation list (file or table) the subjects were matched against")
    listed: int = Field(ge=0, description="distinct subjects on the list")
    rows: int = Field(ge=0, description="rows of the partition whose subject is listed")
    subjects: int = Field(ge=0, description="distinct listed subjects in the partition")
    examples: list[str] = Field(description="up to five of those subjects, smallest first, for remediation")


class ContentEvidence(_Strict):
    """Row-level facts measured with Arrow compute over the partition's data files."""

    rows: int = Field(ge=0)
    distinct_subjects: int = Field(ge=0)
    consent_flags: list[ConsentFlagRows] | None = Field(
        default=None, description="rows per combination of consent flags; None when no consent column is configured"
    )
    revoked: RevokedSubjects | None = Field(default=None, description="None when no revocation list is configured")
    collected_after_withdrawal: int | None = Field(
        default=None, ge=0, description="rows collected at or after their consent was withdrawn; None: not configured"
    )
    collected_after_expiry: int | None = Field(
        default=None, ge=0, description="rows collected at or after their consent expired; None: not configured"
    )


class FailedExpectation(_Strict):
    """One Great Expectations expectation that the partition did not meet."""

    type: str = Field(description="the expectation type, e.g. 'expect_column_values_to_not_be_null'")
    id: str | None = None
    column: str | None = None
    critical: bool = Field(description="the dataset's configuration marks this expectation consent-critical")
    statistics: dict[str, int | float] = Field(
        default_factory=dict, description="the numeric parts of GX's result (element_count, unexpected_count, ...)"
    )


class ExpectationResults(_Strict):
    """The outcome of the dataset's Great Expectations suite on the partition."""

    suite: str
    source: str = Field(description="the suite file")
    success: bool
    evaluated: int = Field(ge=0)
    successful: int = Field(ge=0)
    failed: list[FailedExpectation] = Field(default_factory=list)


class Evidence(_Strict):
    """What a partition contains, measured; empty when its dataset has no evidence configuration."""

    config_source: str | None = Field(default=None, description="the dataset's evidence configuration file")
    content: ContentEvidence | None = None
    expectations: ExpectationResults | None = None


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
    evidence: Evidence = Field(default_factory=Evidence, description="measured facts about the contents")
    evidence_problems: list[EvidenceProblem] = Field(
        default_factory=list, description="why the evidence could not be measured; the policies deny"
    )


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


class _Answer(BaseModel):
    """Parsed from what an engine answered, or from a report read back: nothing is coerced, so
    ``"true"``, ``"yes"`` or ``1`` is not a boolean and ``7`` is not a string."""

    model_config = ConfigDict(strict=True)


class Violation(_Answer):
    """One rule's finding against one partition, built from the rule's METADATA."""

    rule_id: str
    title: str
    severity: Literal["critical", "high", "medium", "low"]
    message: str
    remediation: str
    regulation: list[str]
    recoverable: bool = True
    enforcement: Literal["deny", "warn", "dryrun"] = Field(
        default="deny", description="set by the gate from [consent] settings: only 'deny' blocks"
    )


class PartitionDecision(_Answer):
    """The policies' verdict on one partition."""

    id: str
    allow: bool
    violations: list[Violation]


class PolicyDecision(_Answer):
    """What the entrypoint returns for the whole input."""

    allow: bool
    partitions: list[PartitionDecision]


class DecidedPartition(_Answer):
    """A partition with its verdict, as it appears in the gate report."""

    id: str
    uri: str
    fingerprint: str
    allow: bool
    violations: list[Violation]

    @property
    def blocked(self) -> bool:
        """Denied, unless every violation is only warned about or dry-run."""
        return not self.allow and (not self.violations or any(v.enforcement == "deny" for v in self.violations))


class GateReport(_Answer):
    """Everything one gate evaluation decided; JSON in XCom, rendered text in the logs."""

    decision_id: str
    allow: bool
    purpose: str
    entrypoint: str
    engine: str
    opa_version: str | None
    policy_revision: str | None
    evaluated_at: datetime = Field(strict=False, description="ISO text when read back from XCom or an event")
    duration_ms: float
    partitions: list[DecidedPartition]
    input_digest: str | None = Field(default=None, description="'sha256:<hex>' of the policy input's canonical JSON")

    @property
    def denied(self) -> list[DecidedPartition]:
        return [p for p in self.partitions if not p.allow]

    @property
    def blocked(self) -> list[DecidedPartition]:
        return [p for p in self.partitions if p.blocked]

    @property
    def passed(self) -> list[DecidedPartition]:
        return [p for p in self.partitions if not p.blocked]
