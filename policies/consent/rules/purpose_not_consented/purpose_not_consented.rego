# METADATA
# title: Purpose not consented
# description: >-
#   The training purpose must be covered by a purpose the data subjects consented to (consent
#   to a purpose covers its descendants in the purpose taxonomy), under a legal basis that
#   permits every kind of that purpose (reference data legal_bases: only consent permits
#   model training and biometric processing). Judged only for purposes in the taxonomy;
#   unknown purposes are purpose_unknown's finding.
# custom:
#   id: CONSENT-001
#   severity: critical
#   regulation:
#     - GDPR Art. 5(1)(b)
#     - GDPR Art. 6(1)(a)
#     - FTC Act s.5
#   remediation: >-
#     Exclude the partition, or re-collect consent from its data subjects for this purpose (or
#     an ancestor of it in the purpose taxonomy) under the "consent" legal basis and update the
#     manifest's consent.purposes and consent.legal_basis.
#   recoverable: true
package consent.rules.purpose_not_consented

import data.consent.lib.partitions
import data.consent.lib.purposes
import data.consent.lib.result
import data.consent.reference.legal_bases.legal_bases

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	reasons := _basis_problems(manifest.consent.legal_basis) | _purposes_problems(manifest.consent.purposes)
	count(reasons) > 0
	message := sprintf("purpose %q is not consented: %s", [input.request.purpose, concat("; ", sort(reasons))])
}

_purposes_problems(granted) := {sprintf(
	"the consented purposes %v include neither it nor any of its ancestors",
	[granted],
)} if {
	purposes.requested_known
	not purposes.covers_request(granted)
} else := set()

_basis_problems(basis) := {sprintf(
	"legal basis %q does not permit %s purposes",
	[basis, concat(" or ", sort(denied))],
)} if {
	denied := object.get(_denied_kinds, basis, purposes.requested_kinds)
	count(denied) > 0
} else := set()

# Legal basis → the kinds of the request's purpose it does not permit (a basis missing from the
# reference data permits none). Judged once per query over the reference data.
_denied_kinds[basis] := {kind |
	some kind in purposes.requested_kinds
	object.get(permission.permits, kind, false) != true
} if some basis, permission in legal_bases
