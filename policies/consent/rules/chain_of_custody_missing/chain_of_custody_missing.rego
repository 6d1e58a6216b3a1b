# METADATA
# title: Chain of custody missing
# description: >-
#   Every partition must record how its data passed from the source to us: an empty
#   chain_of_custody leaves its origin unaccountable.
# custom:
#   id: PROV-004
#   severity: medium
#   regulation:
#     - GDPR Art. 5(2)
#     - GDPR Art. 30(1)
#     - EU AI Act Art. 10(2)(b)
#   remediation: >-
#     Record every hand-over of the data from the source to this pipeline (holder, received_at,
#     transfer) in the manifest's provenance.chain_of_custody.
#   recoverable: true
package consent.rules.chain_of_custody_missing

import data.consent.lib.partitions
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	count(object.get(manifest.provenance, "chain_of_custody", [])) == 0
	message := sprintf(
		"no chain of custody is recorded for the data acquired from source %q at %s",
		[manifest.provenance.source, manifest.provenance.acquired_at],
	)
}
