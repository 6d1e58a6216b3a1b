# METADATA
# title: Consent withdrawn
# description: >-
#   Consent withdrawn at or before the request's evaluated_at covers no further processing;
#   the data must not be used for training.
# custom:
#   id: CONSENT-004
#   severity: critical
#   regulation:
#     - GDPR Art. 7(3)
#     - GDPR Art. 17(1)(b)
#     - BIPA 740 ILCS 14/15(a)
#   remediation: >-
#     Exclude the partition and delete or re-derive it without the data of the subjects who
#     withdrew; re-audit models already trained on it.
#   recoverable: false
package consent.rules.consent_withdrawn

import data.consent.lib.dates
import data.consent.lib.partitions
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	withdrawn_at := object.get(manifest.consent, "withdrawn_at", null)
	dates.reached(withdrawn_at)
	message := sprintf(
		"consent was withdrawn at %s, not after the evaluation time %s",
		[withdrawn_at, input.request.evaluated_at],
	)
}
