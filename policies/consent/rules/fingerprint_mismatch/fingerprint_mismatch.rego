# METADATA
# title: Fingerprint mismatch
# description: >-
#   When the data provider attested a digest of the partition, the partition's fingerprint must
#   equal it: otherwise the bytes are not the ones the provider vouched for.
# custom:
#   id: PROV-005
#   severity: critical
#   regulation:
#     - GDPR Art. 5(1)(f)
#     - EU AI Act Art. 10(2)(b)
#   remediation: >-
#     Find out what changed the partition's files since the provider attested them; restore the
#     attested files, or obtain a new attestation and update provenance.attested_digest.
#   recoverable: true
package consent.rules.fingerprint_mismatch

import data.consent.lib.partitions
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	attested := object.get(manifest.provenance, "attested_digest", null)
	attested != null
	fingerprint := input.partitions[index].fingerprint
	attested != fingerprint
	message := sprintf(
		"the partition's fingerprint %s differs from the digest %s attested by source %q",
		[fingerprint, attested, manifest.provenance.source],
	)
}
