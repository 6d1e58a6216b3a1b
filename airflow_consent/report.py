"""Gate reports as people read them: in task logs, in failure messages and in the terminal."""

from __future__ import annotations

from airflow_consent.models import DecidedPartition, GateReport


def render_text(report: GateReport) -> str:
    """A multi-line summary: the verdict, what decided it, then every partition with its violations."""
    denied = report.denied
    verdict = "ALLOWED" if report.allow else f"DENIED {len(denied)} of {len(report.partitions)} partition(s)"
    lines = [
        f"Consent gate {verdict} for purpose {report.purpose!r}",
        f"  decision {report.decision_id} by {report.engine}, OPA {report.opa_version or 'unknown'}, "
        f"policies {report.policy_revision or 'unknown revision'}, {report.duration_ms:.0f} ms",
    ]
    for partition in report.partitions:
        lines.append(f"  {'ALLOW' if partition.allow else 'DENY '} {partition.id}")
        lines.extend(_violation_lines(partition))
    return "\n".join(lines)


def denial_message(report: GateReport) -> str:
    """The failure message of a denied gate: each denied partition, rule and remediation."""
    lines = [
        f"Consent gate denied {len(report.denied)} of {len(report.partitions)} partition(s) for purpose "
        f"{report.purpose!r} (decision {report.decision_id}):"
    ]
    for partition in report.denied:
        lines.append(f"- {partition.id} ({partition.uri})")
        lines.extend(_violation_lines(partition))
    return "\n".join(lines)


def _violation_lines(partition: DecidedPartition) -> list[str]:
    lines = []
    for v in partition.violations:
        lines.append(f"      [{v.rule_id} {v.severity}] {v.title}: {v.message}")
        lines.append(f"        fix: {v.remediation}")
        if v.regulation:
            lines.append(f"        see: {'; '.join(v.regulation)}")
    return lines
