"""OpenLineage facets of a gate run: what was decided, about which partitions, and what passed.

The gate operators return ``gate_lineage(...)`` from ``get_openlineage_facets_on_complete`` and
``..._on_failure``; the OpenLineage provider puts it on the task's COMPLETE or FAIL event:

- run facet ``airflowConsentDecision`` (``AirflowConsentDecisionRunFacet``): decision id, purpose,
  model, engine, policy revision, input digest, partition counts and violations per rule;
- per input dataset, the input facets ``airflowConsentPartitions``
  (``AirflowConsentPartitionsInputDatasetFacet``: each partition's id, URI, fingerprint, verdict and
  violated rules, at most ``PARTITIONS_CAP`` of them), the standard ``dataQualityAssertions`` (one
  assertion per violated rule and one for the whole dataset) and, on COMPLETE, the standard
  ``subset`` naming the partitions that passed the gate.

Only ids, fingerprints, rule ids and counts go into a facet, never a violation's message: messages
name data subjects (``EVIDENCE-002`` gives examples of revoked subjects). Schemas of the custom facets:
``airflow_consent/schemas/openlineage/<version>/``. Imports the OpenLineage client: import this module
only where lineage is emitted.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote

import attr
from openlineage.client.generated.base import InputDatasetFacet, RunFacet
from openlineage.client.utils import RedactMixin

if TYPE_CHECKING:
    from airflow.providers.openlineage.extractors import OperatorLineage
    from openlineage.client.event_v2 import InputDataset

    from airflow_consent.enforcement import Outcome
    from airflow_consent.models import DecidedPartition, GateReport

RUN_FACET = "airflowConsentDecision"
PARTITIONS_FACET = "airflowConsentPartitions"
PARTITIONS_CAP = 1000
"""Partitions listed per input dataset: an event naming a million partitions would be hundreds of MB."""

FACETS_VERSION = "1-0-0"
SCHEMA_DIR = Path(__file__).resolve().parent / "schemas" / "openlineage" / FACETS_VERSION
# Where the schemas are published: an immutable (tag) URL of this repository's schemas directory.
# The repository has no public address yet; set this to the tag's raw URL when it is published.
SCHEMA_BASE_URL = (
    f"https://airflow-consent.invalid/tag/openlineage-facets-{FACETS_VERSION}/"
    f"airflow_consent/schemas/openlineage/{FACETS_VERSION}/"
)


def schema_url(facet_class: str) -> str:
    """The ``_schemaURL`` of a custom facet: its schema file and the ``$defs`` entry in it."""
    return f"{SCHEMA_BASE_URL}{facet_class}.json#/$defs/{facet_class}"


@attr.define
class AirflowConsentDecisionRunFacet(RunFacet):
    """One gate decision: who decided what, for which purpose, over how many partitions."""

    decisionId: str  # facet fields are camelCase, as OpenLineage spells them
    purpose: str
    allow: bool  # the policies allowed every partition
    enforcement: str  # the rules' default mode (deny, warn, dryrun); [consent] rule_enforcement may set others
    onViolation: str
    engine: str
    entrypoint: str
    evaluatedAt: str
    partitionsTotal: int
    partitionsAllowed: int
    partitionsDenied: int
    partitionsExcluded: int
    partitionsApproved: int
    ruleCounts: dict[str, int]
    model: str | None = None
    opaVersion: str | None = None
    policyRevision: str | None = None
    inputDigest: str | None = None

    @staticmethod
    def _get_schema() -> str:
        return schema_url("AirflowConsentDecisionRunFacet")


@attr.define
class ConsentRuleViolation(RedactMixin):
    """A rule a partition violated, without its message (messages may name data subjects)."""

    ruleId: str
    severity: str
    enforcement: str


@attr.define
class ConsentPartition(RedactMixin):
    """One partition as the gate judged it."""

    id: str
    uri: str
    fingerprint: str
    allow: bool
    approved: bool
    violations: list[ConsentRuleViolation]


@attr.define
class AirflowConsentPartitionsInputDatasetFacet(InputDatasetFacet):
    """The partitions of one input dataset the gate checked, with their verdicts.

    ``partitions`` lists at most ``PARTITIONS_CAP``, denied ones first; ``truncated`` says some were
    left out. The counts are always complete.
    """

    decisionId: str
    purpose: str
    partitionsChecked: int
    partitionsAllowed: int
    partitionsApproved: int
    truncated: bool
    partitions: list[ConsentPartition]

    @staticmethod
    def _get_schema() -> str:
        return schema_url("AirflowConsentPartitionsInputDatasetFacet")


def gate_lineage(
    report: GateReport | None,
    outcome: Outcome | None,
    datasets: Sequence[tuple[str, str | None]],
    *,
    enforcement: str,
    on_violation: str,
    model: str | None,
    completed: bool,
    cap: int = PARTITIONS_CAP,
) -> OperatorLineage:
    """The lineage of a gate task over ``datasets`` ((URI, name or None) pairs).

    With no ``report`` (the gate failed before deciding) the inputs carry no facets. ``completed``:
    the task succeeded, so the approved partitions went on to training and the ``subset`` facet names
    them; on failure nothing was approved.
    """
    from airflow.providers.openlineage.extractors import OperatorLineage

    if report is None or outcome is None:
        return OperatorLineage(inputs=[input_dataset(uri) for uri, _ in datasets])
    approved = {p.id for p in outcome.approved} if completed else set()
    by_dataset = partitions_by_dataset(report.partitions, datasets)
    inputs = [
        input_dataset(uri, partitions_facets(report, partitions, name, approved, completed=completed, cap=cap))
        for (uri, name), partitions in by_dataset
    ]
    run_facet = decision_run_facet(
        report, outcome, enforcement=enforcement, on_violation=on_violation, model=model, approved=len(approved)
    )
    return OperatorLineage(inputs=inputs, run_facets={RUN_FACET: run_facet})


def decision_run_facet(
    report: GateReport, outcome: Outcome, *, enforcement: str, on_violation: str, model: str | None, approved: int
) -> AirflowConsentDecisionRunFacet:
    """The ``airflowConsentDecision`` run facet of ``report``."""
    allowed = sum(p.allow for p in report.partitions)
    return AirflowConsentDecisionRunFacet(
        decisionId=report.decision_id,
        purpose=report.purpose,
        model=model,
        allow=report.allow,
        enforcement=enforcement,
        onViolation=on_violation,
        engine=report.engine,
        entrypoint=report.entrypoint,
        opaVersion=report.opa_version,
        policyRevision=report.policy_revision,
        inputDigest=report.input_digest,
        evaluatedAt=report.evaluated_at.isoformat(),
        partitionsTotal=len(report.partitions),
        partitionsAllowed=allowed,
        partitionsDenied=len(report.partitions) - allowed,
        partitionsExcluded=len(outcome.excluded),
        partitionsApproved=approved,
        ruleCounts=dict(sorted(_rule_counts(report.partitions).items())),
    )


def partitions_facets(
    report: GateReport,
    partitions: list[DecidedPartition],
    dataset: str,
    approved: set[str],
    *,
    completed: bool,
    cap: int = PARTITIONS_CAP,
) -> dict[str, InputDatasetFacet]:
    """The input facets of one dataset: its partitions (capped), an assertion per rule and, when the
    task completed, the subset that passed (left out above ``cap``: a partial subset would understate
    what training read)."""
    listed = sorted(partitions, key=lambda p: (p.allow, p.id))[:cap]
    facets: dict[str, InputDatasetFacet] = {
        PARTITIONS_FACET: AirflowConsentPartitionsInputDatasetFacet(
            decisionId=report.decision_id,
            purpose=report.purpose,
            partitionsChecked=len(partitions),
            partitionsAllowed=sum(p.allow for p in partitions),
            partitionsApproved=sum(p.id in approved for p in partitions),
            truncated=len(partitions) > len(listed),
            partitions=[_partition(p, approved) for p in listed],
        ),
        "dataQualityAssertions": rule_assertions(partitions),
    }
    passed = [p for p in partitions if p.id in approved]
    if completed and len(passed) <= cap:
        facets["subset"] = approved_subset(passed, dataset)
    return facets


def rule_assertions(partitions: list[DecidedPartition]) -> InputDatasetFacet:
    """The standard ``dataQualityAssertions`` facet: one failed assertion per rule a partition violated,
    and ``consent_policy``, which succeeds when the policies allowed every partition."""
    from openlineage.client.generated.data_quality_assertions_dataset import (
        Assertion,
        DataQualityAssertionsDatasetFacet,
    )

    allowed = sum(p.allow for p in partitions)
    assertions = [
        Assertion(
            assertion="consent_policy",
            success=allowed == len(partitions),
            severity="error",
            name="partitions allowed by the consent policies",
            description=f"{allowed} of {len(partitions)} partition(s) allowed",
            expected=str(len(partitions)),
            actual=str(allowed),
        )
    ]
    counts = _rule_counts(partitions)
    for rule_id in sorted(counts):
        violations = [v for p in partitions for v in p.violations if v.rule_id == rule_id]
        enforced = any(v.enforcement == "deny" for v in violations)
        assertions.append(
            Assertion(
                assertion=rule_id,
                success=False,
                severity="error" if enforced else "warn",
                name=violations[0].title,
                description=f"{counts[rule_id]} of {len(partitions)} partition(s) violate {rule_id}",
                expected="0",
                actual=str(counts[rule_id]),
                params={
                    "ruleSeverity": violations[0].severity,
                    "enforcement": sorted({v.enforcement for v in violations}),
                },
            )
        )
    return DataQualityAssertionsDatasetFacet(assertions=assertions)


def approved_subset(partitions: list[DecidedPartition], dataset: str) -> InputDatasetFacet:
    """The standard ``subset`` facet: the partitions that passed, by their keys and ids."""
    from openlineage.client.generated.base_subset_dataset import (
        InputSubsetInputDatasetFacet,
        Partition,
        PartitionSubsetCondition,
    )

    return InputSubsetInputDatasetFacet(
        inputCondition=PartitionSubsetCondition(
            partitions=[Partition(dimensions=partition_keys(p.id, dataset), identifier=p.id) for p in partitions]
        )
    )


def partitions_by_dataset(
    partitions: list[DecidedPartition], datasets: Sequence[tuple[str, str | None]]
) -> list[tuple[tuple[str, str], list[DecidedPartition]]]:
    """((URI, dataset name), its partitions) for each dataset, in the gate's order. A partition id
    starts with its dataset's name: the one given, else the last component of the URI (as discovery names it)."""
    named = [(uri, name or uri.rstrip("/").rsplit("/", 1)[-1]) for uri, name in datasets]
    grouped: dict[str, list[DecidedPartition]] = {name: [] for _, name in named}
    for partition in partitions:
        name = next((n for _, n in named if partition.id.startswith(f"{n}/")), None)
        if name is not None:
            grouped[name].append(partition)
    return [((uri, name), grouped[name]) for uri, name in named]


def partition_keys(partition_id: str, dataset: str) -> dict[str, str]:
    """``profile_photos/source=studio%3Aoptin/year=2024`` → ``{"source": "studio:optin", "year": "2024"}``."""
    segments = partition_id.removeprefix(f"{dataset}/").split("/")
    return {unquote(key): unquote(value) for key, _, value in (s.partition("=") for s in segments)}


def input_dataset(uri: str, facets: dict[str, InputDatasetFacet] | None = None) -> InputDataset:
    """The OpenLineage input dataset at ``uri``, named as Airflow names an Asset with that URI
    (a local path is a ``file://`` URI: namespace ``file``, name the absolute path)."""
    from openlineage.client.event_v2 import InputDataset

    namespace, name = dataset_identity(uri)
    return InputDataset(namespace=namespace, name=name, inputFacets=facets or {})


def dataset_identity(uri: str) -> tuple[str, str]:
    """(namespace, name) of ``uri`` by Airflow's Asset converters, else by the object-storage rules."""
    from airflow.providers.openlineage.extractors.manager import ExtractorManager
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset
    from airflow.sdk import Asset

    if "://" not in uri:
        uri = Path(uri).absolute().as_uri()
    try:
        converted = translate_airflow_asset(Asset(uri=uri), None)
    except (ValueError, TypeError):  # a URI Airflow does not accept as an Asset
        converted = None
    converted = converted or ExtractorManager.convert_to_ol_dataset_from_object_storage_uri(uri)
    if converted is None:
        return "file", uri
    return converted.namespace, converted.name


def _partition(partition: DecidedPartition, approved: set[str]) -> ConsentPartition:
    return ConsentPartition(
        id=partition.id,
        uri=partition.uri,
        fingerprint=partition.fingerprint,
        allow=partition.allow,
        approved=partition.id in approved,
        violations=[
            ConsentRuleViolation(ruleId=v.rule_id, severity=v.severity, enforcement=v.enforcement)
            for v in partition.violations
        ],
    )


def _rule_counts(partitions: list[DecidedPartition]) -> Counter[str]:
    """Rule id → how many partitions violate it."""
    return Counter(rule for p in partitions for rule in {v.rule_id for v in p.violations})
