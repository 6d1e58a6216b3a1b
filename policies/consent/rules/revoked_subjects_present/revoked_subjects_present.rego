# METADATA
# title: Revoked subjects present
# description: >-
#   No row may belong to a subject on the dataset's revocation list (subjects who withdrew
#   consent or asked for erasure). Judged only where the gate matched the partition against a
#   revocation list.
# custom:
#   id: EVIDENCE-002
#   severity: critical
#   regulation:
#     - GDPR Art. 7(3)
#     - GDPR Art. 17(1)(b)
#     - CCPA Cal. Civ. Code 1798.105
#   remediation: >-
#     Remove the rows of the listed subjects from the partition (the message names some of
#     them), re-deliver it, and re-audit models already trained on it.
#   recoverable: true
package consent.rules.revoked_subjects_present

import data.consent.lib.evidence
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, content in evidence.contents
	revoked := content.revoked
	is_object(revoked)
	revoked.rows > 0
	message := sprintf(
		"%d row(s) of %d subject(s) on the revocation list %s, e.g. %s",
		[revoked.rows, revoked.subjects, revoked.source, concat(", ", revoked.examples)],
	)
}
