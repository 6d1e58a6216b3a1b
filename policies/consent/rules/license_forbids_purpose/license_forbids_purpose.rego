# METADATA
# title: License forbids purpose
# description: >-
#   Every known license a manifest names (the data's own, the generating model's terms, each
#   upstream dataset's: see license_unknown) must permit the request's purpose: commercial use
#   when the purpose is commercial in the taxonomy, and, when the license lists purposes, the
#   request's purpose or an ancestor of it (judged only for purposes in the taxonomy; unknown
#   purposes are purpose_unknown's finding). An SPDX license no family classifies lists none.
# custom:
#   id: PROV-003
#   severity: high
#   regulation:
#     - EU Directive 2019/790 Art. 4(3)
#     - 17 U.S.C. 106
#     - FTC Act s.5
#   remediation: >-
#     Exclude the partition, or acquire the data (and every dataset it was derived from) under
#     licenses that permit this purpose (for a commercial purpose, ones that permit commercial
#     use) and record them in the manifest's provenance. If the reference data misclassifies a
#     license, correct it in policies/consent/reference/license_terms/data.json.
#   recoverable: false
package consent.rules.license_forbids_purpose

import data.consent.lib.licenses
import data.consent.lib.partitions
import data.consent.lib.purposes
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, concat("; ", sort(problems))) if {
	some index, manifest in partitions.manifests
	problems := {sprintf("license %s of %s %s", [_named(claim.license, id), claim.of, reason]) |
		some claim in licenses.claims(manifest.provenance)
		id := licenses.known_ids[claim.license]
		some reason in _license_problems[id]
	}
	count(problems) > 0
}

_named(claimed, id) := sprintf("%q", [id]) if claimed == id

else := sprintf("%q (%s)", [claimed, id])

# Known license id claimed in this input → why it does not permit this request's purpose
# (licenses without a problem left out). Judged once per query, not once per partition.
_license_problems := {id: problems |
	some id in {id | some id in licenses.known_ids}
	license := licenses.reference[id]
	problems := _commercial_problems(license) | _purpose_problems(license)
	count(problems) > 0
}

_commercial_problems(license) := {sprintf(
	"does not permit commercial use and purpose %q is commercial",
	[input.request.purpose],
)} if {
	object.get(license, "commercial", false) != true
	"commercial" in purposes.requested_kinds
} else := set()

# An entry without "purposes" permits none (null permits any).
_purpose_problems(license) := {_purpose_problem(license, permitted)} if {
	permitted := object.get(license, "purposes", [])
	permitted != null
	purposes.requested_known
	not purposes.covers_request(permitted)
} else := set()

_purpose_problem(license, []) := sprintf(
	"permits no purpose (family %q: %s)",
	[object.get(license, "family", ""), object.get(license, "basis", "")],
)

_purpose_problem(_, permitted) := sprintf("permits purposes %v, not %q", [permitted, input.request.purpose]) if count(permitted) > 0
