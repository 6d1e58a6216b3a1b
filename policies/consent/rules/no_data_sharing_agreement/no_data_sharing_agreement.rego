# METADATA
# title: No data-sharing agreement
# description: >-
#   Data from an approved third-party source needs a data-sharing agreement that is on file
#   for that source, has not expired at the request's evaluated_at, and covers the request's
#   purpose (an agreement for a purpose covers its descendants in the taxonomy). Sources
#   marked "party": "first_party" need none; unapproved sources are source_not_approved's
#   finding.
# custom:
#   id: PROV-002
#   severity: high
#   regulation:
#     - GDPR Art. 26
#     - GDPR Art. 28(3)
#     - CCPA Cal. Civ. Code 1798.100(d)
#   remediation: >-
#     Exclude the partition, or sign or renew a data-sharing agreement with the source that
#     covers this purpose, record it in policies/consent/reference/sources/data.json and name
#     it in the manifest's provenance.data_sharing_agreement.
#   recoverable: true
package consent.rules.no_data_sharing_agreement

import data.consent.lib.dates
import data.consent.lib.partitions
import data.consent.lib.purposes
import data.consent.lib.result
import data.consent.reference.sources.sources

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	provenance := manifest.provenance
	sources[provenance.source]
	object.get(sources, [provenance.source, "party"], "third_party") != "first_party"
	message := _problem(provenance)
}

_problem(provenance) := sprintf(
	"data from source %q names no data-sharing agreement",
	[provenance.source],
) if {
	object.get(provenance, "data_sharing_agreement", null) == null
} else := sprintf(
	"data-sharing agreement %q is not on file for source %q",
	[provenance.data_sharing_agreement, provenance.source],
) if {
	not sources[provenance.source].agreements[provenance.data_sharing_agreement]
} else := concat("; ", sort(_agreement_problems[provenance.source][provenance.data_sharing_agreement]))

# Source → agreement id → why the agreement does not cover this request (agreements without a
# problem left out). Judged once per query over the reference data, not once per partition.
_agreement_problems := {source: {id: problems |
	some id, agreement in entry.agreements
	problems := _expiry_problems(source, id, agreement) | _coverage_problems(source, id, agreement)
	count(problems) > 0
} |
	some source, entry in sources
}

_expiry_problems(source, id, agreement) := {sprintf(
	"data-sharing agreement %q with source %q expired at %s",
	[id, source, agreement.expires_at],
)} if {
	dates.reached(agreement.expires_at)
} else := set()

_coverage_problems(source, id, agreement) := {sprintf(
	"data-sharing agreement %q with source %q covers purposes %v, not %q",
	[id, source, agreement.purposes, input.request.purpose],
)} if {
	purposes.requested_known
	not purposes.covers_request(agreement.purposes)
} else := set()
