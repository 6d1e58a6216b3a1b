# METADATA
# title: Evidence could not be measured
# description: >-
#   A partition whose dataset has an evidence configuration must have measurable evidence: a
#   missing or mistyped column, null subject ids, an unreadable or corrupt data file, an empty
#   partition, an unreadable revocation list or an expectation that could not run leave its
#   contents unchecked, so it is denied.
# custom:
#   id: EVIDENCE-005
#   severity: high
#   regulation:
#     - GDPR Art. 5(2)
#     - EU AI Act Art. 10(2)
#   remediation: >-
#     Fix what the message names (each file, column or setting and its problem): the data
#     files, the dataset's evidence configuration or the revocation list, then re-run the gate.
#   recoverable: true
package consent.rules.evidence_unmeasurable

import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, partition in input.partitions
	problems := object.get(partition, "evidence_problems", [])
	count(problems) > 0
	message := sprintf("the evidence could not be measured: %s", [concat("; ", [_detail(p) | some p in problems])])
}

_detail(problem) := sprintf("%s: %s: %s", [problem.file, problem.field, problem.message]) if is_string(problem.field)

else := sprintf("%s: %s", [problem.file, problem.message])
