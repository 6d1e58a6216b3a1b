# METADATA
# title: Consent expired
# description: >-
#   Consent with an expiry is valid only before it: consent whose expires_at is at or before
#   the request's evaluated_at no longer covers any processing.
# custom:
#   id: CONSENT-003
#   severity: high
#   regulation:
#     - GDPR Art. 6(1)(a)
#     - GDPR Art. 5(1)(e)
#   remediation: >-
#     Exclude the partition, or renew the consent of its data subjects and update
#     consent.expires_at in the manifest.
#   recoverable: true
package consent.rules.consent_expired

import data.consent.lib.dates
import data.consent.lib.partitions
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	expires_at := object.get(manifest.consent, "expires_at", null)
	dates.reached(expires_at)
	message := sprintf(
		"consent expired at %s, not after the evaluation time %s",
		[expires_at, input.request.evaluated_at],
	)
}
