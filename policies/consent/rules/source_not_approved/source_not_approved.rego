# METADATA
# title: Source not approved
# description: >-
#   Data may come only from sources listed in the approved-sources reference data
#   (data.consent.reference.sources), which record the due diligence done on each provider.
# custom:
#   id: PROV-001
#   severity: high
#   regulation:
#     - GDPR Art. 5(2)
#     - GDPR Art. 14
#     - EU AI Act Art. 10(2)(b)
#   remediation: >-
#     Exclude the partition, or have the policy authors vet the source and add it, with its
#     data-sharing agreements, to policies/consent/reference/sources/data.json.
#   recoverable: false
package consent.rules.source_not_approved

import data.consent.lib.partitions
import data.consent.lib.result
import data.consent.reference.sources.sources

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	not sources[manifest.provenance.source]
	message := sprintf(
		"source %q (collection method %q) is not an approved source",
		[manifest.provenance.source, manifest.provenance.collection_method],
	)
}
