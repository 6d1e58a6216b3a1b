# METADATA
# title: Consent coverage below threshold
# description: >-
#   The share of a partition's rows whose subject consented to the request's purpose (a true
#   consent flag for it or for an ancestor of it in the purpose taxonomy) must reach the
#   purpose's threshold: the strictest threshold the reference data coverage lists for the
#   purpose or any of its ancestors, else its default_threshold. A null flag is no consent.
#   Judged only where the gate measured consent flags, and for purposes in the taxonomy
#   (unknown purposes are purpose_unknown's finding).
# custom:
#   id: EVIDENCE-001
#   severity: critical
#   regulation:
#     - GDPR Art. 6(1)(a)
#     - GDPR Art. 7(1)
#     - EU AI Act Art. 10(2)(b)
#   remediation: >-
#     Exclude the partition, or remove the rows of subjects who did not consent to this purpose
#     (or collect their consent and set their flags) and re-deliver the partition.
#   recoverable: true
package consent.rules.consent_coverage_below_threshold

import data.consent.lib.evidence
import data.consent.lib.purposes
import data.consent.lib.result
import data.consent.reference.coverage.coverage

violation contains result.violation(rego.metadata.chain(), index, message) if {
	purposes.requested_known
	some index, content in evidence.contents
	is_array(content.consent_flags)
	content.rows > 0
	consented := sum([entry.rows | some entry in content.consent_flags; purposes.covers_request(entry.purposes)])
	consented < content.rows * threshold
	message := sprintf(
		"%d of %d rows (%v%%) carry consent to %q or an ancestor of it; the threshold for this purpose is %v%%",
		[consented, content.rows, _percent(consented / content.rows), input.request.purpose, _percent(threshold)],
	)
}

# METADATA
# description: >-
#   The request's threshold: the strictest listed for its purpose or an ancestor, else the
#   default.
threshold := max(listed) if {
	listed := {value | some purpose in purposes.requested_lineage; value := coverage.thresholds[purpose]}
	count(listed) > 0
} else := coverage.default_threshold

_percent(share) := round(share * 10000) / 100
