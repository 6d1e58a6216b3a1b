"""What a decision does to the run: enforcement modes and what passes the gate.

Modes, as Gatekeeper users know them: ``deny`` blocks, ``warn`` lets the partition through with its
violations logged and in the report, ``dryrun`` lets it through and only records them. A platform
team sets a default and per-rule modes in ``[consent]``, so a new rule can ship in dryrun first.
``on_violation`` says what a blocked partition does to the gate: ``fail`` it, or ``exclude`` the
partition and let the others through (failing when none is left). Engine errors never reach here:
they block in every mode.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, get_args

from airflow_consent.errors import ConsentConfigurationError
from airflow_consent.models import DecidedPartition, GateReport

Mode = Literal["deny", "warn", "dryrun"]
OnViolation = Literal["fail", "exclude"]
MODES: tuple[str, ...] = get_args(Mode)
ON_VIOLATION: tuple[str, ...] = get_args(OnViolation)


@dataclass(frozen=True)
class Enforcement:
    """The mode of each rule: ``per_rule`` (platform settings) first, else ``default``."""

    default: Mode = "deny"
    per_rule: Mapping[str, Mode] = field(default_factory=dict)

    def mode_for(self, rule_id: str) -> Mode:
        return self.per_rule.get(rule_id, self.default)

    def apply(self, report: GateReport) -> GateReport:
        """The report with every violation's ``enforcement`` set."""
        partitions = [
            p.model_copy(
                update={
                    "violations": [v.model_copy(update={"enforcement": self.mode_for(v.rule_id)}) for v in p.violations]
                }
            )
            for p in report.partitions
        ]
        return report.model_copy(update={"partitions": partitions})


def check_mode(value: str, setting: str) -> Mode:
    if value not in MODES:
        raise ConsentConfigurationError(
            f"{setting}: {value!r} is not an enforcement mode; use one of {', '.join(MODES)}"
        )
    return value  # type: ignore[return-value]


def parse_rule_modes(text: str, setting: str = "[consent] rule_enforcement") -> dict[str, Mode]:
    """``"PROV-004=warn, EVIDENCE-001=dryrun"`` → ``{"PROV-004": "warn", "EVIDENCE-001": "dryrun"}``."""
    modes: dict[str, Mode] = {}
    for item in filter(None, (part.strip() for part in text.replace("\n", ",").split(","))):
        rule_id, sep, mode = (piece.strip() for piece in item.partition("="))
        if not sep or not rule_id:
            raise ConsentConfigurationError(f"{setting}: {item!r} is not RULE_ID=MODE")
        modes[rule_id] = check_mode(mode, f"{setting} for {rule_id}")
    return modes


@dataclass(frozen=True)
class Outcome:
    """What passes the gate: ``passed`` says whether the gate succeeds at all."""

    passed: bool
    approved: list[DecidedPartition]
    excluded: list[DecidedPartition]


def outcome(report: GateReport, on_violation: OnViolation) -> Outcome:
    """Apply ``on_violation`` to an enforced report."""
    blocked = report.blocked
    if on_violation == "exclude":
        approved = report.passed
        return Outcome(passed=bool(approved), approved=approved, excluded=blocked)
    return Outcome(passed=not blocked, approved=[] if blocked else report.partitions, excluded=[])


@dataclass(frozen=True)
class WaitVerdict:
    """A sensor's reading of a report: ``passed``, ``wait`` (not yet) or ``never`` (fail now)."""

    state: Literal["passed", "wait", "never"]
    outcome: Outcome
    waiting: list[DecidedPartition]
    hopeless: list[DecidedPartition]


def wait_verdict(report: GateReport, on_violation: OnViolation) -> WaitVerdict:
    """Separate *not yet* from *never*.

    A blocked partition is hopeless when one of its enforced violations comes from a rule marked
    ``recoverable: false`` (waiting cannot fix a forbidding license); the others may still pass
    (consent re-collected, a manifest or attestation supplied). With ``exclude``, hopeless
    partitions are dropped and the sensor waits for the rest.
    """
    state: Literal["passed", "wait", "never"]
    hopeless = [p for p in report.blocked if any(v.enforcement == "deny" and not v.recoverable for v in p.violations)]
    waiting = [p for p in report.blocked if p not in hopeless]
    result = outcome(report, on_violation)
    if on_violation == "fail" and hopeless:
        state = "never"
    elif waiting:
        state = "wait"
    else:
        state = "passed" if result.passed else "never"
    return WaitVerdict(state=state, outcome=result, waiting=waiting, hopeless=hopeless)
