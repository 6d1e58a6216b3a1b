# METADATA
# title: Minors without parental consent
# description: >-
#   Data that may contain data of minors may be used only with verified parental consent.
# custom:
#   id: CONSENT-005
#   severity: critical
#   regulation:
#     - GDPR Art. 8(1)
#     - COPPA 16 CFR 312.5
#   remediation: >-
#     Exclude the partition, or remove the minors' data from it, or obtain verified parental
#     consent and set consent.parental_consent in the manifest.
#   recoverable: true
package consent.rules.minors_without_parental_consent

import data.consent.lib.partitions
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	manifest.consent.minors == true
	object.get(manifest.consent, "parental_consent", false) != true
	message := sprintf(
		"the data may contain data of minors (jurisdictions %v) and no verified parental consent covers purpose %q",
		[object.get(manifest.consent, "jurisdictions", []), input.request.purpose],
	)
}
