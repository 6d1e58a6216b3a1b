# METADATA
# title: Manifest missing or invalid
# description: >-
#   Every partition needs a valid manifest: without one there are no consent or provenance
#   claims to judge, so a missing or invalid manifest denies (and is the only finding for a
#   partition without one).
# custom:
#   id: PROV-006
#   severity: high
#   regulation:
#     - GDPR Art. 5(2)
#     - EU AI Act Art. 10(2)(b)
#   remediation: >-
#     Write or fix the partition's manifest (sidecar file or Parquet key-value metadata) so
#     that it validates against airflow_consent.models.Manifest; the message names each file
#     and field at fault.
#   recoverable: true
package consent.rules.manifest_invalid

import data.consent.lib.result

violation contains result.violation(rego.metadata.chain(), index, message) if {
	some index, partition in input.partitions
	problems := object.get(partition, "manifest_problems", [])
	_unusable(partition, problems)
	message := _message(partition, problems)
}

# A helper, so that a partition without a "manifest" key counts as having none.
_unusable(partition, _) if not _has_manifest(partition)

_unusable(_, problems) if count(problems) > 0

_has_manifest(partition) if is_object(partition.manifest)

_message(_, problems) := sprintf("the manifest is invalid: %s", [concat("; ", details)]) if {
	count(problems) > 0
	details := [_detail(problem) | some problem in problems]
}

_message(partition, problems) := sprintf("partition %q has no manifest", [partition.id]) if count(problems) == 0

_detail(problem) := sprintf("%s: %s: %s", [problem.file, problem.field, problem.message]) if problem.field != null

_detail(problem) := sprintf("%s: %s", [problem.file, problem.message]) if object.get(problem, "field", null) == null
