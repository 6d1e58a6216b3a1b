# METADATA
# title: Consent-critical expectation failed
# description: >-
#   Every expectation of the dataset's Great Expectations suite that the dataset's evidence
#   configuration marks consent-critical (by expectation type or id) must pass on the partition.
#   Failures of other expectations are reported in the evidence but do not deny.
# custom:
#   id: EVIDENCE-004
#   severity: high
#   regulation:
#     - GDPR Art. 5(1)(d)
#     - GDPR Art. 5(2)
#     - EU AI Act Art. 10(3)
#   remediation: >-
#     Fix the data so that the named expectations pass (their statistics say how many rows
#     fail) and re-deliver the partition; if an expectation is wrong, fix the suite.
#   recoverable: true
package consent.rules.critical_expectation_failed

import data.consent.lib.evidence
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, results in evidence.expectations
	failures := [_describe(failure) | some failure in results.failed; failure.critical == true]
	count(failures) > 0
	message := sprintf(
		"consent-critical expectation(s) of suite %q (%s) failed: %s",
		[results.suite, results.source, concat("; ", failures)],
	)
}

_describe(failure) := sprintf("%s%s %v", [failure.type, _on(failure), _statistics(failure)])

_on(failure) := sprintf(" on column %q", [failure.column]) if is_string(failure.column)

else := ""

_statistics(failure) := object.filter(
	object.get(failure, "statistics", {}),
	{"element_count", "unexpected_count", "unexpected_percent", "observed_value"},
)
