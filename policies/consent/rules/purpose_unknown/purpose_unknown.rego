# METADATA
# title: Purpose unknown
# description: >-
#   The request's purpose must be a purpose of the purpose taxonomy: consent, agreements and
#   licenses can only be judged against purposes the policies know.
# custom:
#   id: CONSENT-006
#   severity: high
#   regulation:
#     - GDPR Art. 5(1)(b)
#   remediation: >-
#     Set the gate's purpose to a purpose id of the taxonomy in
#     policies/consent/reference/purposes/data.json, or have the policy authors add the new
#     purpose to the taxonomy.
#   recoverable: false
package consent.rules.purpose_unknown

import data.consent.lib.purposes
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	not purposes.requested_known
	some index, _ in input.partitions
	message := sprintf(
		"purpose %q is not in the purpose taxonomy (known purposes: %s)",
		[object.get(input.request, "purpose", ""), concat(", ", purposes.ids)],
	)
}
