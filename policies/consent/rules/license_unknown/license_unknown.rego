# METADATA
# title: License unknown
# description: >-
#   Every license a manifest names must be in the licenses reference data (an SPDX license id, or
#   a term of license_terms): the data's own (provenance.license in manifest version 1,
#   provenance.licenses in version 2), the generating model's terms (provenance.generated_by.terms)
#   and each upstream dataset's (provenance.upstream[].licenses). Case and runs of spaces,
#   underscores and hyphens do not matter ("CC BY 4.0" is CC-BY-4.0); a near miss gets a "did you
#   mean". Naming no license is no permission either. Whether a known license permits the purpose
#   is license_forbids_purpose's finding.
# custom:
#   id: PROV-007
#   severity: high
#   regulation:
#     - EU Directive 2019/790 Art. 4(3)
#     - 17 U.S.C. 106
#     - FTC Act s.5
#   remediation: >-
#     Correct the license in the manifest to the SPDX id or reference-data term it means (the
#     message suggests the nearest known ids) and deliver the manifest again. If the data really
#     is under terms the reference data does not know, have them reviewed and add them, with what
#     they permit, to policies/consent/reference/license_terms/data.json.
#   recoverable: true
package consent.rules.license_unknown

import data.consent.lib.licenses
import data.consent.lib.partitions
import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, concat("; ", sort(problems))) if {
	some index, manifest in partitions.manifests
	problems := _unknown(manifest.provenance) | _unlicensed(manifest.provenance)
	count(problems) > 0
}

_unknown(provenance) := {sprintf("license %q of %s is not a known license%s", [claim.license, claim.of, _suggested[claim.license]]) |
	some claim in licenses.claims(provenance)
	claim.license in licenses.unknown_ids
}

_unlicensed(provenance) := {sprintf("%s names no license", [of]) | some of in licenses.unlicensed(provenance)}

# Unknown license id claimed in this input → its "did you mean" (computed once per query).
_suggested := {claimed: _did_you_mean(licenses.suggestions(claimed)) | some claimed in licenses.unknown_ids}

_did_you_mean([]) := ""

_did_you_mean([only]) := sprintf("; did you mean %q?", [only])

_did_you_mean(ids) := sprintf("; did you mean %s or %q?", [concat(", ", [sprintf("%q", [id]) | some id in array.slice(ids, 0, count(ids) - 1)]), ids[count(ids) - 1]]) if count(ids) > 1
