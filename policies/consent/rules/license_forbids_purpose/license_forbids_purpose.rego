# METADATA
# title: License forbids purpose
# description: >-
#   The data's license must be in the licenses reference data (unknown and proprietary terms
#   are not licenses for training), must permit commercial use when the purpose is commercial
#   in the taxonomy, and, when it lists purposes, must cover the request's purpose (judged
#   only for purposes in the taxonomy; unknown purposes are purpose_unknown's finding).
# custom:
#   id: PROV-003
#   severity: high
#   regulation:
#     - EU Directive 2019/790 Art. 4(3)
#     - 17 U.S.C. 106
#     - FTC Act s.5
#   remediation: >-
#     Exclude the partition, or acquire the data under a license that permits this purpose
#     (for a commercial purpose, one that permits commercial use) and record it in the
#     manifest's provenance.license.
#   recoverable: false
package consent.rules.license_forbids_purpose

import data.consent.lib.partitions
import data.consent.lib.purposes
import data.consent.lib.result
import data.consent.reference.licenses.licenses

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, manifest in partitions.manifests
	message := _problem(manifest.provenance)
}

_problem(provenance) := sprintf(
	"license %q of source %q is not a known license",
	[provenance.license, provenance.source],
) if {
	not licenses[provenance.license]
} else := concat("; ", sort(_license_problems[provenance.license]))

# License id → why the license does not permit this request's purpose (licenses without a
# problem left out). Judged once per query over the reference data, not once per partition.
_license_problems := {id: problems |
	some id, license in licenses
	problems := _commercial_problems(id, license) | _purpose_problems(id, license)
	count(problems) > 0
}

_commercial_problems(id, license) := {sprintf(
	"license %q does not permit commercial use and purpose %q is commercial",
	[id, input.request.purpose],
)} if {
	object.get(license, "commercial", false) != true
	"commercial" in purposes.requested_kinds
} else := set()

_purpose_problems(id, license) := {sprintf(
	"license %q permits purposes %v, not %q",
	[id, license.purposes, input.request.purpose],
)} if {
	license.purposes != null
	purposes.requested_known
	not purposes.covers_request(license.purposes)
} else := set()
