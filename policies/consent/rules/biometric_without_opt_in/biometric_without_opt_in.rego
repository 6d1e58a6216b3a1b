# METADATA
# title: Biometric data without opt-in
# description: >-
#   Biometric data (faces, fingerprints, voice prints) may be used for a biometric purpose in
#   the purpose taxonomy only when its data subjects explicitly opted in to biometric
#   processing.
# custom:
#   id: CONSENT-002
#   severity: critical
#   regulation:
#     - GDPR Art. 9(2)(a)
#     - BIPA 740 ILCS 14/15(b)
#     - FTC Act s.5
#   remediation: >-
#     Exclude the partition, or obtain a written biometric opt-in (release) from every data
#     subject in it and set consent.biometric_opt_in in the manifest.
#   recoverable: true
package consent.rules.biometric_without_opt_in

import data.consent.lib.partitions
import data.consent.lib.purposes
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	manifest.consent.biometric == true
	"biometric" in purposes.requested_kinds
	object.get(manifest.consent, "biometric_opt_in", false) != true
	message := sprintf(
		"the data is biometric and purpose %q is biometric processing, but its subjects did not opt in to biometric processing",
		[input.request.purpose],
	)
}
