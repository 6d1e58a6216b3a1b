"""Gate reports as people read them: in task logs, in failure messages and in the terminal."""

from __future__ import annotations

from airflow_consent.models import DecidedPartition, GateReport


def render_text(report: GateReport) -> str:
    """A multi-line summary: the verdict, what decided it, then every partition with its violations."""
    lines = [
        f"Consent gate {_verdict(report)} for purpose {report.purpose!r}",
        f"  decision {report.decision_id} by {report.engine}, OPA {report.opa_version or 'unknown'}, "
        f"policies {report.policy_revision or 'unknown revision'}, {report.duration_ms:.0f} ms",
    ]
    for partition in report.partitions:
        label = "ALLOW" if partition.allow else "DENY " if partition.blocked else "PASS "
        lines.append(f"  {label} {partition.id}")
        lines.extend(_violation_lines(partition))
    return "\n".join(lines)


def denial_message(report: GateReport) -> str:
    """The failure message of a blocked gate: each blocked partition, rule and remediation."""
    blocked = report.blocked
    lines = [
        f"Consent gate denied {len(blocked)} of {len(report.partitions)} partition(s) for purpose "
        f"{report.purpose!r} (decision {report.decision_id}):"
    ]
    for partition in blocked:
        lines.append(f"- {partition.id} ({partition.uri})")
        lines.extend(_violation_lines(partition))
    return "\n".join(lines)


def _verdict(report: GateReport) -> str:
    blocked, denied = report.blocked, report.denied
    if blocked:
        return f"DENIED {len(blocked)} of {len(report.partitions)} partition(s)"
    if denied:
        return f"PASSED with {len(denied)} partition(s) violating rules in warn/dryrun mode"
    return "ALLOWED"


def _violation_lines(partition: DecidedPartition) -> list[str]:
    lines = []
    for v in partition.violations:
        mode = "" if v.enforcement == "deny" else f", {v.enforcement}: not enforced"
        lines.append(f"      [{v.rule_id} {v.severity}{mode}] {v.title}: {v.message}")
        lines.append(f"        fix: {v.remediation}")
        if v.regulation:
            lines.append(f"        see: {'; '.join(v.regulation)}")
    return lines
